r"""bf16 vs float32 inversion quality: PSNR on held-out faces with the shipped demo model, at equal steps.

  python -m bench.bench_precision                         # 16 faces: celeba_small/009001.jpg .. 009016.jpg
  python -m bench.bench_precision --num_images=32 --iterations=300 --method=pmsfc

The demo model's main-job settings (``presets.demo()``: PmSFC with the shipped subspaces, R = 6, K = 5,
layer 3, Adam lr 0.03, 300 steps, VGG16 relu3_3 term at 64x64) on held-out CelebA faces (``0090*.jpg`` of
the shared ``celeba_small`` folder without ``009000.jpg``, a training face), once with
``model.compute_dtype='float32'`` and once with ``'bfloat16'``, the same per-image keys
(``io.listing.image_keys``) and the same number of steps. Prints per-image PSNR side by side, the mean
change and its spread, and the final losses. Both reconstructions are scored in float32 against the
target (``evaluation.metrics.psnr`` on [0, 1] images). Goal (issue #10): a mean change within 0.1 dB.
``--control`` adds float32 with the next seed: how far per-image PSNR moves with other initial codes,
the scale against which the bf16 spread is read.
"""

from __future__ import annotations

import os
import pathlib
import time

import jax
import numpy as np
from absl import app
from absl import flags

from pmsfc_jax.core import config
from pmsfc_jax.core import inversion
from pmsfc_jax.core import presets
from pmsfc_jax.evaluation import metrics
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import images
from pmsfc_jax.io import listing
from pmsfc_jax.io import pretrained
from pmsfc_jax.io import subspaces
from pmsfc_jax.io import tables
from pmsfc_jax.jobs import logs

_SHARED = pathlib.Path(os.environ.get('PMSFC_SHARED', pathlib.Path(__file__).resolve().parents[2] / 'shared'))
_FACES = flags.DEFINE_string(
  'faces', str(_SHARED / 'data' / 'celeba_small'), 'Aligned CelebA folder ($PMSFC_SHARED/data/celeba_small).'
)
_NUM = flags.DEFINE_integer('num_images', 16, 'Held-out faces 009001.jpg onwards.')
_ITERS = flags.DEFINE_integer('iterations', 0, 'Adam steps (0: the demo preset, 300).')
_METHOD = flags.DEFINE_enum('method', 'pmsfc', ['pmsfc', 'mganprior'], 'Composition.')
_BATCH = flags.DEFINE_integer('batch_size', 8, 'Images per inversion call.')
_CONTROL = flags.DEFINE_bool(
  'control',
  False,
  'Also float32 with the next seed (other initial codes): the per-image spread of the method.',
)


def invert(cfg, gen, percep, masks, names, targets) -> tuple[np.ndarray, np.ndarray, float]:
  """(PSNR per image, final loss per image, seconds) of ``cfg`` on ``targets``, batch by batch."""
  psnrs, losses, t = [], [], time.perf_counter()
  for lo in range(0, len(names), _BATCH.value):
    x = targets[lo : lo + _BATCH.value]
    keys = listing.image_keys(cfg.seed, names[lo : lo + _BATCH.value])
    result = inversion.invert(gen, percep, x, masks, cfg, keys)
    psnrs.append(np.asarray(metrics.psnr((result.images + 1) / 2, (x + 1) / 2)))
    losses.append(np.asarray(result.loss_history)[:, -1])
  return np.concatenate(psnrs), np.concatenate(losses), time.perf_counter() - t


def main(argv):
  del argv
  logs.quiet_libraries()
  cfg = presets.demo()
  overrides = {'method.name': _METHOD.value, 'job.steps_per_call': 1}
  if _ITERS.value:
    overrides['optim.iterations'] = _ITERS.value
  if _METHOD.value == 'mganprior':
    overrides['method.num_codes'] = cfg.compare.num_codes_mganprior
  cfg = config.override(cfg, overrides)
  gen = checkpoints.load_generator(cfg.model.generator)
  masks = subspaces.load_subspaces(cfg.model.subspaces).masks if _METHOD.value == 'pmsfc' else None
  percep = pretrained.load_perceptual(cfg.loss.perceptual)
  items = listing.list_inputs(f'{_FACES.value}/0090*.jpg')
  paths = sorted((p for p in items if p.name != '009000.jpg'), key=lambda p: p.name)
  paths = paths[: _NUM.value]
  names = [p.name for p in paths]
  size = gen.config.resolution
  targets = np.stack([images.load_image(p.path, size=size) for p in paths])
  out = {}
  for dtype in ('float32', 'bfloat16'):
    out[dtype] = invert(
      config.override(cfg, {'model.compute_dtype': dtype}), gen, percep, masks, names, targets
    )
  if _CONTROL.value:
    out['control'] = invert(config.override(cfg, {'seed': cfg.seed + 1}), gen, percep, masks, names, targets)
  (p32, l32, s32), (p16, l16, s16) = out['float32'], out['bfloat16']
  d = p16 - p32
  rows = [[n, *map(float, v)] for n, *v in zip(names, p32, p16, d, l32, l16)]
  print(
    f'\n## bf16 vs float32: {len(names)} held-out faces ({names[0]} .. {names[-1]}), demo model '
    f'{size}x{size}, {cfg.method.name}, {cfg.optim.iterations} Adam steps lr {cfg.optim.lr}, VGG at '
    f'{cfg.loss.perceptual.resize}; {jax.devices()[0].device_kind}\n'
  )
  header = ['image', 'PSNR f32', 'PSNR bf16', 'change dB', 'loss f32', 'loss bf16']
  print(tables.markdown(header, rows, float_format='.3f'))
  print(
    f'\nmean PSNR f32 {p32.mean():.3f} dB, bf16 {p16.mean():.3f} dB: change {d.mean():+.3f} dB '
    f'(per image: sd {d.std():.3f}, min {d.min():+.3f}, max {d.max():+.3f}; standard error of the mean '
    f'{d.std(ddof=1) / np.sqrt(len(d)):.3f}); wall time f32 {s32:.0f} s, bf16 {s16:.0f} s'
  )
  if _CONTROL.value:
    c = out['control'][0] - p32
    print(
      f'control, float32 with seed {cfg.seed + 1} instead of {cfg.seed} (other initial codes): mean change '
      f'{c.mean():+.3f} dB, per image sd {c.std():.3f}, min {c.min():+.3f}, max {c.max():+.3f}'
    )


if __name__ == '__main__':
  app.run(main)
