r"""Inversion speed: seconds per optimisation step per image and achieved FLOP/s (XLA cost analysis).

For each generator resolution and batch size, builds a random-weight PGGAN (official widths by default),
random partition masks (R subspaces of the layer's channels), the VGG16 perceptual loss, and times
``inversion.run_steps`` (one jitted ``lax.scan`` of ``--steps`` steps, after a warm-up call). FLOPs come
from ``jit(...).lower(...).compile().cost_analysis()`` of a ONE-step program (XLA's analysis does not
multiply a while-loop body by its trip count), so ``achieved FLOP/s = flops(1 step) / seconds per step``.

  python -m bench.bench_invert                                   # res 64 and 256, batch 1/4/8
  python -m bench.bench_invert --resolutions=64 --batch_sizes=1,4 --steps=3 --vgg_resize=64   # CPU
  python -m bench.bench_invert --method=mganprior --num_codes=30 --optimizer=sgd

Prints a markdown table (and the device it ran on).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from pmsfc_jax.core import config
from pmsfc_jax.core import inversion
from pmsfc_jax.io import pretrained
from pmsfc_jax.models import pggan

_RES = flags.DEFINE_list('resolutions', ['64', '256'], 'Generator resolutions.')
_BATCH = flags.DEFINE_list('batch_sizes', ['1', '4', '8'], 'Images per batch.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed optimisation steps (one lax.scan).')
_METHOD = flags.DEFINE_enum('method', 'pmsfc', ['pmsfc', 'mganprior'], 'Composition.')
_LAYER = flags.DEFINE_integer('layer', 3, 'Split layer.')
_R = flags.DEFINE_integer('num_subspaces', 6, 'R (pmsfc).')
_K = flags.DEFINE_integer('num_codes', 5, 'K per subspace (pmsfc) or N (mganprior).')
_OPT = flags.DEFINE_enum('optimizer', 'adam', ['adam', 'sgd'], 'Optimizer.')
_Z = flags.DEFINE_integer('z_dim', 512, 'Latent size.')
_FMAPS_BASE = flags.DEFINE_integer('fmaps_base', 16384, 'nf(res) = min(fmaps_base // res, fmaps_max).')
_FMAPS_MAX = flags.DEFINE_integer('fmaps_max', 512, 'Max channels.')
_VGG_LAYER = flags.DEFINE_string('vgg_layer', 'relu3_3', 'Perceptual layer.')
_VGG_RESIZE = flags.DEFINE_integer('vgg_resize', 256, 'VGG input size (0: no resize).')
_PERCEPTUAL_WEIGHT = flags.DEFINE_float('perceptual_weight', 1.0, '0 skips VGG.')
_PER_CALL = flags.DEFINE_integer(
  'steps_per_call',
  0,
  'Steps per jitted lax.scan (0: auto, 1 on CPU; pmsfc_jax/loops.py). Compare 1 with --steps on CPU.',
)


def _flops(compiled) -> float:
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  return float((ca or {}).get('flops', float('nan')))


def bench_one(res: int, batch: int, percep) -> dict:
  gcfg = pggan.GeneratorConfig(
    resolution=res, z_dim=_Z.value, fmaps_base=_FMAPS_BASE.value, fmaps_max=_FMAPS_MAX.value
  )
  gen = pggan.Generator(gcfg, pggan.init_params(gcfg, jax.random.key(0)))
  channels = pggan.feature_shape(gcfg, _LAYER.value)[-1]
  masks = None
  if _METHOD.value == 'pmsfc':
    labels = np.random.default_rng(0).permutation(np.arange(channels) % _R.value)
    masks = np.eye(_R.value, dtype=bool)[labels].T
  cfg = config.parse(
    config.InvertConfig,
    {
      'method': {'name': _METHOD.value, 'num_codes': _K.value},
      'model': {'layer': _LAYER.value},
      'optim': {'optimizer': _OPT.value, 'lr': 1e-2, 'iterations': 2 * _STEPS.value + 2},
      'loss': {'perceptual_weight': _PERCEPTUAL_WEIGHT.value},
      'job': {'steps_per_call': _PER_CALL.value},
    },
  )
  s = cfg
  targets = jnp.clip(gen(jax.random.normal(jax.random.key(1), (batch, gcfg.z_dim))), -1, 1)
  state = inversion.init_state(gen, percep, targets, masks, cfg, jax.random.key(2))
  m = None if masks is None else jnp.asarray(masks, jnp.float32)
  p = percep if s.loss.perceptual_weight else None
  x, tfeat = inversion._objective_jit(p, targets, None, s)  # pylint: disable=protected-access
  one = inversion._run_steps_jit.lower(gen, p, state, x, tfeat, m, None, s, 1).compile()  # pylint: disable=protected-access
  flops = _flops(one)
  t0 = time.perf_counter()
  state = inversion.run_steps(gen, p, state, targets, masks, cfg, _STEPS.value)  # compile + warm-up
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  state = inversion.run_steps(gen, p, state, targets, masks, cfg, _STEPS.value)
  jax.block_until_ready(state)
  step_s = (time.perf_counter() - t0) / _STEPS.value
  return dict(
    res=res,
    batch=batch,
    step_s=step_s,
    per_image=step_s / batch,
    flops=flops,
    flops_per_s=flops / step_s,
    compile_s=compile_s,
  )


def main(argv):
  del argv
  percep = None
  if _PERCEPTUAL_WEIGHT.value:
    percep = pretrained.load_perceptual(
      config.PerceptualConfig(layer=_VGG_LAYER.value, resize=_VGG_RESIZE.value or None)
    )
  dev = jax.devices()[0]
  print(
    f'device: {dev.platform} {dev.device_kind} x{jax.device_count()}; method={_METHOD.value} '
    f'layer={_LAYER.value} R={_R.value} K={_K.value} optimizer={_OPT.value} '
    f'VGG={_VGG_LAYER.value}@{_VGG_RESIZE.value or "native"} (weight {_PERCEPTUAL_WEIGHT.value}) '
    f'widths base={_FMAPS_BASE.value} max={_FMAPS_MAX.value} z={_Z.value} steps={_STEPS.value} '
    f'steps_per_call={_PER_CALL.value or "auto"}'
  )
  print()
  print(
    '| resolution | batch | s / step | s / step / image | GFLOP / step | achieved GFLOP/s | '
    'first call (compile + run) s |'
  )
  print('|---:|---:|---:|---:|---:|---:|---:|')
  for res in map(int, _RES.value):
    for batch in map(int, _BATCH.value):
      r = bench_one(res, batch, percep)
      print(
        f'| {r["res"]} | {r["batch"]} | {r["step_s"]:.4f} | {r["per_image"]:.4f} | '
        f'{r["flops"] / 1e9:.2f} | {r["flops_per_s"] / 1e9:.1f} | {r["compile_s"]:.1f} |',
        flush=True,
      )


if __name__ == '__main__':
  app.run(main)
