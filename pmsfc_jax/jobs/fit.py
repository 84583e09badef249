"""What fits a device: the batch job's ``batch_size=auto`` and the memory bounds of ``launch.plan``.

``batch_size=auto`` (``job.batch_size = 0``): the largest per-device batch whose compiled inversion step
(``aot.inversion_program``: the function and layout the job dispatches) fits the device memory less a
headroom of ``HEADROOM_FRACTION`` of it plus ``HEADROOM_BYTES`` (for the runtime, the target-feature and
finalize programs, fragmentation), searched up to ``MAX_AUTO_BATCH`` per device; each probe is one
compilation (:func:`largest_fitting` needs about four). Memory: the device's
``memory_stats()['bytes_limit']`` (GPU, TPU), else the chip table (``jobs/chips.py``). On CPU the job
keeps the default batch size (``config.Job.batch_size``), logged. This module imports only the core
and models (no clustering / scikit-learn), so ``bench/device_check.py`` runs it from a bare jax image.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
from absl import logging

from pmsfc_jax.core import config
from pmsfc_jax.core import loops
from pmsfc_jax.jobs import aot
from pmsfc_jax.jobs import chips
from pmsfc_jax.models import pggan

HEADROOM_FRACTION = 0.10
HEADROOM_BYTES = 256 * 2**20
MAX_AUTO_BATCH = 64  # per device: bounds the search's compilations and the last batch's padding


def usable_bytes(capacity: int) -> int:
  """Device memory a step may use: ``capacity`` less the documented headroom."""
  return int(capacity * (1 - HEADROOM_FRACTION)) - HEADROOM_BYTES


def job_steps_per_call(cfg: config.InvertConfig, platform: Optional[str] = None) -> int:
  """Steps per jitted call of the batch job's chunks (``job.steps_per_call``; auto: the whole chunk
  between checkpoints on accelerators, 1 on CPU)."""
  iters = cfg.optim.iterations
  chunk = max(1, min(cfg.job.chunk_size or iters, cfg.job.checkpoint_every or iters, iters or 1))
  return loops.steps_per_call(cfg.job.steps_per_call, chunk, platform)


def device_capacity(device: Any) -> Optional[int]:
  """Bytes a device may allocate: ``memory_stats()['bytes_limit']`` (GPU, TPU), else the chip table."""
  try:
    stats = device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except  # backends without memory stats raise
    stats = {}
  if stats.get('bytes_limit'):
    return int(stats['bytes_limit'])
  chip = chips.by_device_kind(device.device_kind)
  return None if chip is None else chip.hbm_bytes


class Compiler:
  """Compiles each (program, batch) once: the auto search and the report share the results."""

  def __init__(self, build):
    self.build, self.programs, self.done = build, {}, {}

  def program(self, per_device: int) -> aot.Program:
    """The program at ``per_device`` (built once: building traces the models)."""
    if per_device not in self.programs:
      self.programs[per_device] = self.build(per_device)
    return self.programs[per_device]

  def __call__(self, per_device: int) -> dict:
    if per_device not in self.done:
      program = self.program(per_device)
      logging.info('compiling %s at %d per device', program.name, per_device)
      self.done[per_device] = aot.compile_program(program)
    return self.done[per_device]

  def largest_fitting(self, capacity: int) -> tuple[int, dict[int, int]]:
    """:func:`largest_fitting` of the compiled footprints against ``capacity`` less the headroom."""
    limit = usable_bytes(capacity)
    return largest_fitting(lambda b: self.footprint(b, limit), limit, MAX_AUTO_BATCH)

  def footprint(self, per_device: int, limit: int = 0) -> int:
    """Bytes per device; a program the compiler refuses counts as what it says it needs (> ``limit``)."""
    try:
      return self(per_device)['memory']['footprint_bytes']
    except aot.DoesNotFit as e:
      return max(e.required_bytes, limit + 1)


def resolve_batch_size(
  cfg: config.InvertConfig,
  gcfg: pggan.GeneratorConfig,
  num_subspaces: Optional[int],
  mesh: jax.sharding.Mesh,
  capacity: Optional[int] = None,
) -> config.InvertConfig:
  """``cfg`` with ``job.batch_size = 0`` (auto) replaced by the largest per-device batch whose compiled
  step fits (module docstring) times the mesh's devices; on CPU, or without a memory limit, the default.
  ``capacity``: bytes per device instead of the device's own limit (bench/device_check.py, tests)."""
  if cfg.job.batch_size:
    return cfg
  device = mesh.devices.flat[0]
  batch = config.Job.batch_size
  if capacity is None and device.platform != 'cpu':
    capacity = device_capacity(device)
  if capacity is None:
    logging.info(
      'batch_size=auto on %s: batch size %d (auto sizes batches by accelerator memory)',
      device.platform,
      batch,
    )
  else:
    steps = job_steps_per_call(cfg)
    compiler = Compiler(lambda b: aot.inversion_program(gcfg, cfg, num_subspaces, mesh, b * mesh.size, steps))
    per_device, probes = compiler.largest_fitting(capacity)
    if not per_device:
      raise config.ConfigError(
        f'--batch_size=auto: one image per device needs {probes[1] / 2**30:.2f} GiB, more than the '
        f'{usable_bytes(capacity) / 2**30:.2f} GiB usable on {device.device_kind}'
      )
    batch = per_device * mesh.size
    logging.info(
      'batch_size=auto: %d per device x %d devices (step footprints in bytes by per-device batch: %s; '
      '%d bytes usable of %d)',
      per_device,
      mesh.size,
      probes,
      usable_bytes(capacity),
      capacity,
    )
  return dataclasses.replace(cfg, job=dataclasses.replace(cfg.job, batch_size=batch))


def largest_fitting(footprint: Callable[[int], int], limit: int, cap: int) -> tuple[int, dict[int, int]]:
  """The largest ``b`` in [1, cap] with ``footprint(b) <= limit`` (footprint increasing in b), and every
  footprint measured ({b: bytes}); 0 if even b = 1 does not fit.

  Each probe is one compilation, so the search extrapolates: from the two largest fitting batches
  while no failing one is known, then by interpolation between the largest fitting and the smallest
  failing one (the footprint is close to affine in the batch), ending when they are adjacent.
  """
  seen: dict[int, int] = {}

  def fits(b: int) -> bool:
    seen[b] = int(footprint(b))
    return seen[b] <= limit

  if not fits(1):
    return 0, seen
  lo, hi = 1, None
  while lo < cap and (hi is None or hi - lo > 1):
    if hi is None:
      prev = max((b for b in seen if b < lo), default=None)
      slope = (seen[lo] - seen[prev]) / (lo - prev) if prev is not None else 0
      guess = lo + int((limit - seen[lo]) // slope) if slope > 0 else 2 * lo
      guess = min(max(guess, lo + 1), cap)
    else:
      span = max(seen[hi] - seen[lo], 1)
      guess = min(max(lo + int((limit - seen[lo]) * (hi - lo) // span), lo + 1), hi - 1)
    if fits(guess):
      lo = guess
    else:
      hi = guess
  return lo, seen
