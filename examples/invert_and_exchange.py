r"""Research code with the library: invert a folder of faces, then exchange a subspace between them.

  python examples/invert_and_exchange.py --images=faces/ --output=exchange.png [--iterations=300]

Inverts the faces with PmSFC on the shipped demo model (the paper's objective with Adam at the ``fast``
learning rate; the VGG16 term at 64x64 as in ``launch.demo``), then writes the exchange grid of Fig. 4:
cell (i, j) is face i with the channels of one subspace taken from face j (the diagonal: the inversions).
Nothing here comes from ``launch/``.
"""

import argparse

import numpy as np

import pmsfc_jax


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--images', required=True, help='directory, glob or list file of faces')
  parser.add_argument('--output', default='exchange.png')
  parser.add_argument('--iterations', type=int, default=300)
  parser.add_argument('--max_images', type=int, default=4)
  parser.add_argument('--subspace', type=int, default=0, help='which subspace to exchange')
  args = parser.parse_args()

  gen = pmsfc_jax.load_generator('demo')
  subspaces = pmsfc_jax.load_subspaces('demo')
  cfg = pmsfc_jax.config.override(
    pmsfc_jax.presets.invert('pmsfc,fast'),
    {'optim.iterations': args.iterations, 'loss.perceptual.resize': 64},
  )
  items = pmsfc_jax.list_inputs(args.images)[: args.max_images]
  faces = np.stack([pmsfc_jax.load_image(it.path, gen.config.resolution) for it in items])
  targets = pmsfc_jax.prepare_target(faces, cfg.task)  # reconstruction: the faces themselves
  percep = pmsfc_jax.load_perceptual(cfg.loss.perceptual)
  keys = pmsfc_jax.image_keys(cfg.seed, [it.name for it in items])
  result = pmsfc_jax.invert(gen, percep, targets, subspaces.masks, cfg, keys)
  loss = np.asarray(result.loss_history)
  print(f'inverted {len(items)} faces: loss {loss[:, 0].mean():.4f} -> {loss[:, -1].mean():.4f}')

  grid = np.asarray(pmsfc_jax.exchange_subspace(gen, result, subspaces.masks, cfg, args.subspace))
  n = len(items)
  cells = np.clip(grid.reshape(n * n, *grid.shape[2:]), -1, 1)
  pmsfc_jax.save_image(args.output, pmsfc_jax.make_grid(cells, ncols=n))
  print(f'wrote {args.output}: row i = face i with subspace {args.subspace} of face j')


if __name__ == '__main__':
  main()
