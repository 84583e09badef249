"""Capacity plans for TPU topologies without a TPU (``launch.plan``).

``plan`` compiles, for a named TPU topology (``'v5e:2x2'``, ``'v5e:16x16'``, ``'v4:4x4x4'``, ...; the
compile-only devices of ``jax.experimental.topologies.get_topology_desc``, which needs libtpu:
``pip install -e '.[tpu]'``), the programs the jobs dispatch (``jobs/aot.py``: the inversion step with
the job's steps per call, the discovery step), with the jobs' mesh and sharding, and reports per chip:
memory against the chip's HBM, FLOPs per step per image, collectives, compile time, and a prediction of
seconds per image and images per hour at an ASSUMED fraction of the chip's peak FLOP/s
(``fraction_of_peak``, default 0.4: an assumption, not a measurement; chip table: ``jobs/chips.py``).

Layouts, as the jobs do it: the inversion compiles on the batch job's own mesh (``core/mesh.job_mesh``, one
code path with the job) in its multi-host default scope (``config.Job.mesh``: one global mesh over every
chip of the slice, the program the job runs on a pod); ``inversion_mesh='host'`` is a what-if on one
host's chips (the job's ``--config.job.mesh=host``), which XLA:TPU refuses on v5e slices above 4x4: the
plan then compiles the global mesh and says so in its ``notes``. Discovery is one data-parallel program
over every chip. The host count follows libtpu's default of 4 chips per host.

``batch_size=0`` (auto): the largest per-chip batch that fits with the headroom of ``jobs/fit.py`` (the
batch job's ``--batch_size=auto`` on a real device). A batch that does not fit the chip (the footprint
over the chip's HBM, or refused by XLA:TPU's own HBM check while compiling) is a :class:`PlanError`.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import sys
from typing import Any, Optional

import jax
from jax.experimental import topologies

from pmsfc_jax.core import config
from pmsfc_jax.core import loops
from pmsfc_jax.core import mesh as mesh_lib
from pmsfc_jax.core import presets
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import files
from pmsfc_jax.io import subspaces as subspaces_lib
from pmsfc_jax.io import tables
from pmsfc_jax.jobs import aot
from pmsfc_jax.jobs import chips
from pmsfc_jax.jobs import fit
from pmsfc_jax.jobs import logs
from pmsfc_jax.models import pggan

DEFAULT_FRACTION_OF_PEAK = 0.4
PAPER_SUBSPACES = 6  # R of the paper, when no subspace folder names it
EXIT_ERROR = 2
# XLA:TPU on v5e slices larger than 4x4 ("limited ICI routing"): a program must span the whole slice.
SLICE_ONLY = 'should include all slice devices'


class PlanError(Exception):
  """A plan that cannot be made (unknown topology, no libtpu, a batch that cannot fit): one line."""


# ------------------------------------------------------------------------------------------------
# Topologies.


def topology_devices(name: str) -> list:
  """Compile-only devices of a TPU topology name (v4 / v5p in megacore mode: one device per chip)."""
  if importlib.util.find_spec('libtpu') is None:
    raise PlanError("libtpu is not installed (pip install -e '.[tpu]'): it compiles for TPU topologies")
  logs.quiet_absent_tpu()
  chip = chips.by_generation(name.split(':')[0])
  kwargs = {'chip_config_name': 'megacore'} if chip is not None and chip.megacore else {}
  try:
    return list(topologies.get_topology_desc(topology_name=name, platform='tpu', **kwargs).devices)
  except Exception as e:  # pylint: disable=broad-except  # libtpu: JaxRuntimeError INVALID_ARGUMENT ...
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if 'INVALID_ARGUMENT' not in reason:
      raise PlanError(f'libtpu could not describe TPU topology {name!r}: {reason}') from None
    raise PlanError(
      f'invalid or unknown TPU topology {name!r} (expected GENERATION:SHAPE with a generation among '
      f'{", ".join(chips.TPU_GENERATIONS)}, e.g. v5e:2x2, v5e:16x16, v4:4x4x4): {reason}'
    ) from None


def describe(devices: list) -> dict:
  """Chips (unique coordinates per slice), hosts (process indices), device kind of compile-only devices."""
  chip_ids = {(getattr(d, 'slice_index', 0) or 0, tuple(getattr(d, 'coords', (d.id,)))) for d in devices}
  hosts = {d.process_index for d in devices}
  return {
    'devices': len(devices),
    'chips': len(chip_ids),
    'hosts': len(hosts),
    'devices_per_host': len(devices) // len(hosts),
    'device_kind': devices[0].device_kind,
  }


def _generator_config(
  cfg: config.InvertConfig, resolution: Optional[int], arch: dict
) -> pggan.GeneratorConfig:
  if cfg.model.generator:
    return checkpoints.load_generator_config(cfg.model.generator)  # the config item only, no weights
  if not resolution:
    raise PlanError('give --resolution (the official PGGAN architecture at that size) or --generator')
  arch = dict(arch)  # the official architecture (TF G_paper: fused upsampling convs) unless overridden
  arch['fused_scale'] = {'true': True, 'false': False}.get(
    arch.get('fused_scale', True), arch.get('fused_scale', True)
  )
  try:
    return pggan.GeneratorConfig(resolution=resolution, **arch)
  except ValueError as e:
    raise PlanError(str(e)) from None


def _num_subspaces(cfg: config.InvertConfig, num_subspaces: Optional[int]) -> Optional[int]:
  if cfg.method.name != 'pmsfc':
    return None
  if cfg.model.subspaces:
    return subspaces_lib.load_subspaces(cfg.model.subspaces).num_subspaces
  return num_subspaces or PAPER_SUBSPACES


# ------------------------------------------------------------------------------------------------
# The plan.


def _record(
  program: aot.Program,
  compiled: dict,
  chip: chips.Chip,
  capacity: int,
  iterations: int,
  fraction: float,
) -> dict:
  """The JSON record of one compiled program, images per hour for one chip; FLOPs per step per image
  from the host-CPU lowering."""
  flops = aot.model_flops(program) / program.batch
  footprint = compiled['memory']['footprint_bytes']
  rate = chip.peak_bf16_flops * fraction
  per_image = flops * iterations / rate
  return {
    'program': f'{program.jitted.__module__}.{getattr(program.jitted, "__name__", program.name)}',
    'global_batch': program.batch,
    'steps_per_call': program.kwargs['num_steps'],
    'flops_per_step_per_image': flops,
    'flops_source': 'XLA HloCostAnalysis of the one-step program lowered for the host CPU, unsharded '
    '(pmsfc_jax/jobs/aot.py: model_flops)',
    'hbm_bytes_per_chip': footprint,
    'hbm_bytes_source': compiled['memory']['footprint_source'],
    'hbm_capacity_bytes': capacity,
    'usable_bytes': fit.usable_bytes(capacity),
    'fits': footprint <= capacity,
    'fits_with_headroom': footprint <= fit.usable_bytes(capacity),
    'peak_flops_per_chip': chip.peak_bf16_flops,
    'fraction_of_peak': fraction,
    'iterations': iterations,
    'predicted_seconds_per_image': per_image,
    'images_per_hour': 3600.0 / per_image if per_image > 0 else None,
    **compiled,
  }


def plan(
  cfg: config.InvertConfig,
  topology: str,
  resolution: Optional[int] = None,
  arch: Optional[dict] = None,
  batch_size: int = 0,
  steps_per_call: int = 0,
  fraction_of_peak: float = DEFAULT_FRACTION_OF_PEAK,
  hbm_capacity: int = 0,
  inversion_mesh: str = config.Job.mesh,
  num_subspaces: Optional[int] = None,
  programs: tuple[str, ...] = ('inversion', 'discovery'),
) -> dict:
  """The capacity plan of ``cfg`` on ``topology`` (see the module docstring); ``batch_size`` per chip,
  0 = auto. Raises :class:`PlanError` with a one-line reason."""
  if not 0 < fraction_of_peak <= 1:
    raise PlanError(f'--fraction_of_peak must be in (0, 1], got {fraction_of_peak}')
  if inversion_mesh not in mesh_lib.SCOPES:
    raise PlanError(f'--inversion_mesh must be one of {mesh_lib.SCOPES}, got {inversion_mesh!r}')
  gcfg = _generator_config(cfg, resolution, arch or {})
  devices = topology_devices(topology)
  info = describe(devices)
  chip = chips.by_device_kind(info['device_kind'])
  if chip is None:
    raise PlanError(f'no entry for device kind {info["device_kind"]!r} in the chip table (jobs/chips.py)')
  capacity = int(hbm_capacity) or chip.hbm_bytes
  out = {
    'topology': topology,
    **info,
    'chip': {'name': chip.name, 'source': chip.source, 'hbm_bytes': chip.hbm_bytes},
    'generator': gcfg.to_dict(),
    'method': cfg.method.name,
    'task': cfg.task.name,
    'compute_dtype': cfg.model.compute_dtype,
    'remat': cfg.job.remat,
    'fraction_of_peak': fraction_of_peak,
    'fraction_of_peak_note': 'an assumption: predicted times divide FLOPs by this fraction of the chip peak',
    'versions': {p: _version(p) for p in ('jax', 'jaxlib', 'libtpu')},
    'notes': [],
  }
  if 'inversion' in programs:
    steps = steps_per_call or fit.job_steps_per_call(cfg, 'tpu')
    args = (
      cfg,
      gcfg,
      _num_subspaces(cfg, num_subspaces),
      steps,
      batch_size,
      chip,
      capacity,
      fraction_of_peak,
    )
    try:
      rec = _inversion(mesh_lib.job_mesh(inversion_mesh, devices=devices), *args)
      rec['mesh'] = inversion_mesh
    except Exception as e:  # pylint: disable=broad-except  # jax.errors.JaxRuntimeError
      if inversion_mesh != 'host' or SLICE_ONLY not in str(e):
        raise
      rec = _inversion(mesh_lib.job_mesh('global', devices=devices), *args)
      rec['mesh'] = 'global'
      out['notes'].append(
        f"XLA:TPU refuses a program on one host's chips of {topology} ({SLICE_ONLY}): the what-if "
        '--inversion_mesh=host cannot run here, and neither can the batch job with --config.job.mesh=host. '
        "The inversion was compiled on the job's default global mesh over every chip instead (the per-chip "
        'program is the same: no collectives), which is what the job runs on this slice.'
      )
    rec['images_per_hour'] *= info['chips']
    per_host = rec['per_chip_batch'] * info['devices_per_host']
    out.update(
      per_chip_batch=rec['per_chip_batch'],
      job_batch_size_per_host=per_host,  # the rows each host adds to a batch
      # launch.invert --batch_size: the batch over the job's mesh (global: every chip; host: one host's)
      job_batch_size=rec['per_chip_batch'] * rec['mesh_devices'] if rec['mesh'] == 'global' else per_host,
    )
    out['inversion'] = rec
  if 'discovery' in programs:
    out['discovery'] = _discovery(gcfg, cfg.model.layer, devices, chip, capacity, fraction_of_peak)
  return out


def _inversion(mesh, cfg, gcfg, r, steps, batch_size, chip, capacity, fraction) -> dict:
  """The inversion step on ``mesh``: ``batch_size`` per chip (0: auto), compiled and recorded."""
  compiler = fit.Compiler(lambda b: aot.inversion_program(gcfg, cfg, r, mesh, b * mesh.size, steps))
  probes = None
  if not batch_size:
    batch_size, probes = compiler.largest_fitting(capacity)
    if not batch_size:
      limit = fit.usable_bytes(capacity)
      raise PlanError(
        f'batch 1 per chip needs {probes[1] / 2**30:.2f} GiB, more than the {limit / 2**30:.2f} GiB usable '
        f'of a {chip.name} ({capacity / 2**30:.2f} GiB less headroom)'
      )
  try:
    compiled = compiler(batch_size)
  except aot.DoesNotFit as e:
    raise PlanError(
      f'per-chip batch {batch_size} does not fit a {chip.name}: {e}; try --batch_size=auto'
    ) from None
  rec = _record(compiler.program(batch_size), compiled, chip, capacity, cfg.optim.iterations, fraction)
  if not rec['fits']:
    raise PlanError(
      f'per-chip batch {batch_size} needs {rec["hbm_bytes_per_chip"] / 2**30:.2f} GiB per chip, more than '
      f'the {capacity / 2**30:.2f} GiB of a {chip.name}; try --batch_size=auto'
    )
  rec.update(mesh_devices=mesh.size, per_chip_batch=batch_size, auto_probes=probes)
  return rec


def _discovery(gcfg, layer: int, devices: list, chip: chips.Chip, capacity: int, fraction: float) -> dict:
  """Algorithm 1 over every chip with the official batch rounded up to a multiple of the chip count."""
  dcfg = presets.discover()
  mesh = mesh_lib.make_mesh(devices=devices)
  hp = dataclasses.replace(dcfg.optim, batch_size=mesh_lib.padded_size(dcfg.optim.batch_size, mesh.size))
  steps = loops.steps_per_call(dcfg.job.steps_per_call, dcfg.job.log_every, 'tpu')
  program = aot.discovery_program(gcfg, layer, hp, mesh, steps)
  try:
    compiled = aot.compile_program(program)
  except aot.DoesNotFit as e:
    raise PlanError(
      f'discovery ({hp.batch_size // mesh.size} latent per chip) does not fit a {chip.name}: {e}'
    ) from None
  rec = _record(program, compiled, chip, capacity, hp.iterations, fraction)
  run_seconds = rec.pop('predicted_seconds_per_image') * hp.batch_size / mesh.size
  rec.pop('images_per_hour')
  rec.update(
    per_chip_batch=hp.batch_size // mesh.size,
    predicted_seconds=run_seconds,
    note=f'one latent per image; predicted_seconds: the whole run of {hp.iterations} steps on all chips',
  )
  return rec


def _version(package: str) -> Optional[str]:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def table(result: dict) -> str:
  """A short markdown table of a plan."""
  gib = lambda b: f'{b / 2**30:.2f}'
  rows = []
  for name in ('inversion', 'discovery'):
    r = result.get(name)
    if r is None:
      continue
    rows.append(
      [
        name,
        r['per_chip_batch'],
        f'{r["flops_per_step_per_image"] / 1e9:.1f}',
        f'{gib(r["hbm_bytes_per_chip"])} / {gib(r["hbm_capacity_bytes"])}',
        r['collectives']['total'],
        f'{r["compile_seconds"]:.1f}',
        f'{r["predicted_seconds_per_image"]:.1f}' if 'predicted_seconds_per_image' in r else '',
        f'{r["images_per_hour"]:.0f}'
        if r.get('images_per_hour')
        else f'run {r.get("predicted_seconds", 0):.0f} s',
      ]
    )
  head = (
    f'{result["topology"]}: {result["chips"]} chips ({result["device_kind"]}), {result["hosts"]} hosts; '
    f'{result["generator"]["resolution"]}x{result["generator"]["resolution"]}, {result["method"]}, '
    f'{result["compute_dtype"]}{", remat" if result["remat"] else ""}; predictions at '
    f'{result["fraction_of_peak"]:.0%} of peak (assumed)\n\n'
  )
  header = [
    'program',
    'batch/chip',
    'GFLOP/step/image',
    'HBM GiB/chip (of)',
    'collectives',
    'compile s',
    's/image',
    'images/hour',
  ]
  notes = ''.join(f'\n\nnote: {n}' for n in result.get('notes', []))
  if 'job_batch_size' in result:
    inv = result['inversion']
    notes = (
      f'\n\nbatch job: launch.invert --batch_size={result["job_batch_size"]} on every host '
      f'({inv["mesh"]} mesh of {inv["mesh_devices"]} chips, {result["job_batch_size_per_host"]} images per host '
      'per call)' + notes
    )
  return head + tables.markdown(header, rows) + notes


def main(cfg: config.InvertConfig, output_json: str = '', **kwargs: Any) -> int:
  """``launch.plan``: prints the table, writes the JSON; a :class:`PlanError` is one line and exit 2."""
  jax.config.update('jax_platforms', 'cpu')  # compile-only TPU devices + the host CPU: no backend to start
  try:
    result = plan(cfg, **kwargs)
  except (PlanError, config.ConfigError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_ERROR
  if output_json:
    files.write_json(output_json, result)
  print(table(result))
  return 0
