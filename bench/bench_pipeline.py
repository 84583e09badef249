r"""Batch-job benchmark: images*steps/s vs batch size and device count; memory per image (remat, bf16).

1. Throughput: ``inversion.run_steps`` on a batch sharded over a ``'data'`` mesh of D devices
   (``mesh.make_mesh`` / ``shard_batch``, params replicated), exactly as the batch job runs it,
   for every (D, batch) pair; prints images*steps per second (after one warm-up call).
2. Memory: XLA:CPU's ``compiled.memory_analysis()`` of ONE optimisation step (no execution) at the given
   resolutions with the official PGGAN architecture, PmSFC R=6, K=5, layer 3, VGG16 relu3_3 at 256, for
   ``model.compute_dtype`` float32 / bfloat16 x ``job.remat`` off / on (``jobs/aot.py``: the job's own
   step function). For TPU chips use ``launch.plan`` (docs/performance.md); XLA:CPU lays buffers out
   differently. The bf16 quality check is ``bench/bench_precision.py``.

  python -m bench.bench_pipeline                       # forced CPU devices: set XLA_FLAGS first, e.g.
  XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m bench.bench_pipeline --memory_res=256,1024
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import app
from absl import flags

from pmsfc_jax.core import config
from pmsfc_jax.core import inversion
from pmsfc_jax.core import mesh as mesh_lib
from pmsfc_jax.core import presets
from pmsfc_jax.jobs import aot
from pmsfc_jax.models import pggan

_DEVICES = flags.DEFINE_list('devices', ['1', '2', '4'], 'Device counts (first D local devices).')
_BATCH = flags.DEFINE_list('batch_sizes', ['1', '4', '8', '16'], 'Batch sizes.')
_RES = flags.DEFINE_integer('res', 32, 'Throughput: generator resolution.')
_FMAPS_MAX = flags.DEFINE_integer('fmaps_max', 64, 'Throughput: max channels (small for CPU).')
_STEPS = flags.DEFINE_integer('steps', 4, 'Throughput: timed steps.')
_MEM_RES = flags.DEFINE_list('memory_res', ['256', '1024'], 'Memory: resolutions (official widths).')
_MEM_BATCH = flags.DEFINE_integer('memory_batch', 2, 'Memory: batch size of the analysed step.')


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
  """XLA:CPU's memory analysis of one step (no execution) for the four compute_dtype x remat variants."""
  print(
    f'\n## Memory of one step (XLA:CPU memory_analysis, batch {_MEM_BATCH.value}, official widths, '
    'pmsfc R=6 K=5, VGG relu3_3 @256; footprint = max(peak, arguments + outputs + temps - aliased))\n'
  )
  print(
    '| res | compute_dtype | remat | footprint MiB / image | arguments MiB | compile s |\n|---|---|---|---|---|---|'
  )
  mesh = mesh_lib.make_mesh(1)
  for res in map(int, _MEM_RES.value):
    gcfg = pggan.GeneratorConfig(resolution=res, fused_scale=True)
    for dtype in ('float32', 'bfloat16'):
      for remat in (False, True):
        cfg = config.override(_config(iterations=10), {'model.compute_dtype': dtype, 'job.remat': remat})
        b = _MEM_BATCH.value
        r = aot.compile_program(aot.inversion_program(gcfg, cfg, 6, mesh, b, 1))
        m = r['memory']
        print(
          f'| {res} | {dtype} | {remat} | {m["footprint_bytes"] / b / 2**20:.1f} | '
          f'{m["argument_size_in_bytes"] / 2**20:.1f} | {r["compile_seconds"]:.1f} |',
          flush=True,
        )


def main(argv):
  del argv
  throughput()
  memory()


if __name__ == '__main__':
  app.run(main)
