r"""Research code with the library: the paper's objective inside your own ``jax.jit`` / ``vmap`` loop.

  python examples/jit_vmap_objective.py [--steps=200] [--batch=4]

``pmsfc_jax.objective`` is Eq. 9 of ONE image as a pure function of its codes and weights; here it is
vmapped over a batch of in-domain targets (faces the demo generator draws), differentiated and stepped
with an optax optimiser of our own choosing (Adam with a cosine schedule), all in one ``jax.jit``. The
composed features (``pmsfc_jax.compose``, Eq. 6-7) of the result are then decoded by hand.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pmsfc_jax


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--batch', type=int, default=4)
  args = parser.parse_args()

  gen = pmsfc_jax.load_generator('demo')
  masks = jnp.asarray(pmsfc_jax.load_subspaces('demo').masks, jnp.float32)
  cfg = pmsfc_jax.config.override(pmsfc_jax.presets.invert('pmsfc'), {'loss.perceptual_weight': 0.0})
  targets = jnp.clip(gen(jax.random.normal(jax.random.key(0), (args.batch, gen.config.z_dim))), -1, 1)
  state = pmsfc_jax.init_state(gen, None, targets, masks, cfg, jax.random.key(1))  # the paper's init
  params = {'codes': state.codes, 'weights': state.weights}
  tx = optax.adam(optax.cosine_decay_schedule(0.05, args.steps))
  opt_state = tx.init(params)

  def loss_fn(p, target):  # one image: Eq. 9 (reconstruction, pixel term only here)
    return pmsfc_jax.objective(p, gen, None, masks, target, cfg)

  @jax.jit
  def step(params, opt_state):
    losses, grads = jax.vmap(jax.value_and_grad(loss_fn))(params, targets)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, losses

  first = None
  for _ in range(args.steps):
    params, opt_state, losses = step(params, opt_state)
    first = np.asarray(losses) if first is None else first
  layer = cfg.model.layer
  compose = jax.jit(jax.vmap(lambda c, w: pmsfc_jax.compose(gen, c, w, masks, layer, 'pmsfc')))
  images = gen.g2(compose(params['codes'], params['weights']), layer)
  psnr = 10 * np.log10(4.0 / np.asarray(jnp.mean((images - targets) ** 2, axis=(1, 2, 3))))
  print(
    f'objective {first.mean():.4f} -> {np.asarray(losses).mean():.4f} after {args.steps} steps; '
    f'PSNR {psnr.mean():.2f} dB'
  )


if __name__ == '__main__':
  main()
