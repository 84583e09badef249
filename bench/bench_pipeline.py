r"""Batch-job benchmark: images*steps/s vs batch size and device count; memory per image (remat, bf16).

1. Throughput: ``inversion.run_steps`` on a batch sharded over a ``'data'`` mesh of D devices
   (``mesh.make_mesh`` / ``shard_batch``, params replicated), exactly as the batch job runs it,
   for every (D, batch) pair; prints images*steps per second (after one warm-up call).
2. Memory: XLA's ``compiled.memory_analysis()`` of ONE optimisation step (no execution, works on CPU) at
   the given resolutions with the official PGGAN widths, PmSFC R=6, K=5, layer 3, VGG16 relu3_3 at 256:
   temp (activation) bytes per image, for four variants of G2 (the decoder the gradient flows through):
   plain f32; ``remat`` = ``jax.checkpoint`` around every two-layer segment of G2 (only segment
   boundaries are kept for the backward pass); ``bf16`` = G2's params and activations in bfloat16
   (composition, loss, VGG and optimizer stay f32); both.
3. bf16 quality: PSNR reached after ``--psnr_steps`` Adam steps on in-domain targets at ``--psnr_res``,
   f32 vs bf16 G2.

The remat / bf16 variants swap ``composition.decode`` inside this script only (the library has no such
option yet; see docs/batch_inversion.md).

  python -m bench.bench_pipeline                       # forced CPU devices: set XLA_FLAGS first, e.g.
  XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m bench.bench_pipeline --memory_res=256,1024
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from pmsfc_jax.core import composition
from pmsfc_jax.core import config
from pmsfc_jax.core import inversion
from pmsfc_jax.core import mesh as mesh_lib
from pmsfc_jax.core import presets
from pmsfc_jax.io import pretrained
from pmsfc_jax.models import pggan

_DEVICES = flags.DEFINE_list('devices', ['1', '2', '4'], 'Device counts (first D local devices).')
_BATCH = flags.DEFINE_list('batch_sizes', ['1', '4', '8', '16'], 'Batch sizes.')
_RES = flags.DEFINE_integer('res', 32, 'Throughput: generator resolution.')
_FMAPS_MAX = flags.DEFINE_integer('fmaps_max', 64, 'Throughput: max channels (small for CPU).')
_STEPS = flags.DEFINE_integer('steps', 4, 'Throughput: timed steps.')
_MEM_RES = flags.DEFINE_list('memory_res', ['256', '1024'], 'Memory: resolutions (official widths).')
_MEM_BATCH = flags.DEFINE_integer('memory_batch', 2, 'Memory: batch size of the analysed step.')
_PSNR_RES = flags.DEFINE_integer('psnr_res', 32, 'bf16 PSNR: resolution.')
_PSNR_STEPS = flags.DEFINE_integer('psnr_steps', 100, 'bf16 PSNR: Adam steps.')

F32 = jnp.float32


def segmented_decode(remat: bool, dtype) -> callable:
  """``composition.decode`` replacement: G2 in two-layer segments, optionally checkpointed / bf16."""

  def decode(gen, features, layer):
    cfg = gen.config
    mod = pggan.PGGANGenerator(cfg)
    params = jax.tree.map(lambda p: p.astype(dtype), gen.params)
    x = features[None].astype(dtype)
    starts = list(range(layer, cfg.num_layers, 2))
    for i, start in enumerate(starts):
      stop = None if i == len(starts) - 1 else start + 2
      seg = lambda p, h, start=start, stop=stop: mod.apply({'params': p}, h, start, stop)
      if remat:
        seg = jax.checkpoint(seg)
      x = seg(params, x)
    return x[0].astype(F32)

  return decode


def _config(**kw) -> config.InvertConfig:
  """PmSFC, Adam lr 0.03 (``fast``), with ``perceptual_weight`` / ``iterations`` / ``lr`` overridden."""
  paths = {'perceptual_weight': 'loss.perceptual_weight', 'iterations': 'optim.iterations', 'lr': 'optim.lr'}
  return config.override(presets.invert('pmsfc,fast'), {paths[k]: v for k, v in kw.items()})


def _masks(gcfg, r=6):
  c = pggan.feature_shape(gcfg, 3)[-1]
  labels = np.random.default_rng(0).permutation(np.arange(c) % r)
  return np.stack([labels == i for i in range(r)])


def throughput():
  gcfg = pggan.GeneratorConfig(resolution=_RES.value, z_dim=64, fmaps_base=2048, fmaps_max=_FMAPS_MAX.value)
  gen0 = pggan.Generator(gcfg, pggan.init_params(gcfg, jax.random.key(0)))
  masks = _masks(gcfg)
  config = _config(perceptual_weight=0.0, iterations=_STEPS.value + 1)
  print(
    f'\n## Throughput (res {_RES.value}, fmaps_max {_FMAPS_MAX.value}, pmsfc R=6 K=5, no VGG, '
    f'{jax.devices()[0].platform} x{jax.local_device_count()})\n'
  )
  print('| devices | batch | images*steps/s |\n|---|---|---|')
  for d in map(int, _DEVICES.value):
    if d > jax.local_device_count():
      continue
    mesh = mesh_lib.make_mesh(d)
    gen = mesh_lib.replicate(gen0, mesh)
    for b in map(int, _BATCH.value):
      bp = mesh_lib.padded_size(b, d)
      targets = mesh_lib.shard_batch(np.zeros((bp, _RES.value, _RES.value, 3), np.float32), mesh)
      keys = mesh_lib.shard_batch(np.stack([np.array([0, i], np.uint32) for i in range(bp)]), mesh)
      state = mesh_lib.shard_batch(inversion.init_state(gen, None, targets, masks, config, keys), mesh)
      state = inversion.run_steps(gen, None, state, targets, masks, config, _STEPS.value)  # compile
      jax.block_until_ready(state.codes)
      t = time.perf_counter()
      state = inversion.run_steps(gen, None, state, targets, masks, config, _STEPS.value)
      jax.block_until_ready(state.codes)
      dt = time.perf_counter() - t
      print(f'| {d} | {b} (padded {bp}) | {b * _STEPS.value / dt:.1f} |', flush=True)


def memory():
  percep = pretrained.load_perceptual(config.PerceptualConfig())
  print(
    f'\n## Memory of one step per image (memory_analysis, batch {_MEM_BATCH.value}, official widths, '
    'pmsfc R=6 K=5, VGG relu3_3 @256)\n'
  )
  print('| res | G2 variant | temp MiB / image | params+args MiB | compile s |\n|---|---|---|---|---|')
  original = composition.decode
  try:
    for res in map(int, _MEM_RES.value):
      gcfg = pggan.GeneratorConfig(resolution=res)
      gen = jax.eval_shape(
        lambda gcfg=gcfg: pggan.Generator(gcfg, pggan.init_params(gcfg, jax.random.key(0)))
      )
      masks = jnp.asarray(_masks(gcfg), F32)
      b = _MEM_BATCH.value
      s = _config(iterations=10)
      targets = jax.ShapeDtypeStruct((b, res, res, 3), F32)
      keys = jax.ShapeDtypeStruct((b, 2), jnp.uint32)
      state = jax.eval_shape(
        lambda k, gcfg=gcfg, s=s: inversion._init_jit(gcfg, jax.random.wrap_key_data(k), 6, s), keys
      )
      for name, remat, dtype in (
        ('f32', False, F32),
        ('remat', True, F32),
        ('bf16', False, jnp.bfloat16),
        ('remat+bf16', True, jnp.bfloat16),
      ):
        composition.decode = segmented_decode(remat, dtype)
        jax.clear_caches()
        t = time.perf_counter()
        x, tfeat = jax.eval_shape(lambda p, t, s=s: inversion._objective_jit(p, t, None, s), percep, targets)  # pylint: disable=protected-access
        compiled = (
          jax.jit(inversion.run_steps_impl, static_argnums=(7, 8))
          .lower(gen, percep, state, x, tfeat, masks, None, s, 1)
          .compile()
        )
        ma = compiled.memory_analysis()
        args = (ma.argument_size_in_bytes) / 2**20
        print(
          f'| {res} | {name} | {ma.temp_size_in_bytes / b / 2**20:.1f} | {args:.1f} | '
          f'{time.perf_counter() - t:.1f} |',
          flush=True,
        )
  finally:
    composition.decode = original
    jax.clear_caches()


def bf16_psnr():
  res = _PSNR_RES.value
  gcfg = pggan.GeneratorConfig(resolution=res, z_dim=64, fmaps_base=2048, fmaps_max=64)
  gen = pggan.Generator(gcfg, pggan.init_params(gcfg, jax.random.key(0)))
  masks = _masks(gcfg)
  targets = gen(jax.random.normal(jax.random.key(7), (4, gcfg.z_dim)))
  config = _config(perceptual_weight=0.0, iterations=_PSNR_STEPS.value, lr=0.03)
  original = composition.decode
  out = {}
  try:
    for name, dtype in (('f32', F32), ('bf16', jnp.bfloat16)):
      composition.decode = segmented_decode(False, dtype)
      jax.clear_caches()
      r = inversion.invert(gen, None, targets, masks, config, jax.random.key(1))
      composition.decode = segmented_decode(False, F32)  # score both in f32
      jax.clear_caches()
      img = inversion.render(gen, r.codes, r.weights, masks, config)
      mse = jnp.mean((img - targets) ** 2, axis=(1, 2, 3)) / 4.0  # [-1,1] -> [0,1] scale
      out[name] = float(jnp.mean(-10 * jnp.log10(mse)))
  finally:
    composition.decode = original
    jax.clear_caches()
  print(f'\n## bf16 quality (res {res}, {_PSNR_STEPS.value} Adam steps lr 0.03, 4 in-domain targets)\n')
  print(
    f'PSNR f32 {out["f32"]:.2f} dB, bf16 G2 {out["bf16"]:.2f} dB, change {out["bf16"] - out["f32"]:+.2f} dB'
  )


def main(argv):
  del argv
  throughput()
  bf16_psnr()
  memory()


if __name__ == '__main__':
  app.run(main)
