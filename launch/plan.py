r"""Capacity plan of a TPU pod job, compiled ahead of time on this machine (no TPU needed; libtpu is).

  python -m launch.plan --topology=v5e:16x16 --resolution=1024 --batch_size=auto \
    [--method=pmsfc] [--task=reconstruct] [--config.model.compute_dtype=bfloat16] [--config.job.remat] \
    [--generator=DIR] [--steps_per_call=N] [--fraction_of_peak=0.4] [--output_json=plan.json]

Compiles, for the named topology's chips (``jax.experimental.topologies``; ``pip install -e '.[tpu]'``),
the inversion step the batch job calls (on the job's multi-host default mesh: one global mesh over every
chip; ``--inversion_mesh=host``: a what-if on one host's chips) and the discovery step (all chips), on
abstract inputs with the jobs' own mesh and sharding; prints a table and writes JSON:
per-chip memory against the chip's HBM, FLOPs per step per image, collectives, compile seconds, and
seconds per image / images per hour at an assumed fraction of peak (pmsfc_jax/jobs/plan.py,
docs/performance.md). ``--resolution`` builds the official PGGAN architecture at that size (tiny
variants: ``--fmaps_max`` / ``--fmaps_base`` / ``--z_dim``); ``--generator`` reads a checkpoint's config
only. ``--batch_size`` is per chip (``auto``: the largest that fits with headroom). Exit status 2, one
line: unknown topology, missing libtpu, a batch that cannot fit.
"""

from absl import flags

from launch import flags as launch_flags
from pmsfc_jax.core import config
from pmsfc_jax.core import mesh
from pmsfc_jax.jobs import plan

NAMED = {
  'generator': 'model.generator',
  'subspaces': 'model.subspaces',
  'method': 'method.name',
  'task': 'task.name',
  'preset': None,
  'factor': 'task.factor',
  'iterations': 'optim.iterations',
  'batch_size': None,
  'num_codes': 'method.num_codes',
  'layer': 'model.layer',
  'num_subspaces': None,
  **dict.fromkeys(launch_flags.ARCHITECTURE),
}
_TOPOLOGY = flags.DEFINE_string(
  'topology', None, 'TPU topology, e.g. v5e:2x2, v5e:16x16, v4:4x4x4, v5p:8x8x8.'
)
_STEPS = flags.DEFINE_integer('steps_per_call', 0, "Inversion steps per jitted call (0: the job's).")
_FRACTION = flags.DEFINE_float('fraction_of_peak', plan.DEFAULT_FRACTION_OF_PEAK, 'Assumed FLOP/s fraction.')
_CAPACITY = flags.DEFINE_float('hbm_capacity_gib', 0, 'Per-chip memory override in GiB (0: the chip table).')
_MESH = flags.DEFINE_enum(
  'inversion_mesh',
  config.Job.mesh,
  list(mesh.SCOPES),
  "Inversion mesh: the batch job's default (global: every chip); host: a what-if on one host's chips.",
)
_PROGRAMS = flags.DEFINE_list('programs', ['inversion', 'discovery'], 'Programs to compile.')
_OUTPUT_JSON = flags.DEFINE_string('output_json', '', 'Write the plan here as JSON.')


def main(argv):
  launch_flags.check(argv, ['config', *NAMED], required=['topology'])
  return launch_flags.call(
    plan.main,
    launch_flags.config(config.InvertConfig, NAMED),
    topology=_TOPOLOGY.value,
    resolution=flags.FLAGS.resolution,
    arch=launch_flags.given('z_dim', 'fmaps_base', 'fmaps_max', 'fused_scale'),
    batch_size=flags.FLAGS.batch_size or 0,
    steps_per_call=_STEPS.value,
    fraction_of_peak=_FRACTION.value,
    hbm_capacity=int(_CAPACITY.value * 2**30),
    inversion_mesh=_MESH.value,
    num_subspaces=flags.FLAGS.num_subspaces,
    programs=tuple(_PROGRAMS.value),
    output_json=_OUTPUT_JSON.value,
  )


if __name__ == '__main__':
  launch_flags.start(main, config.InvertConfig, NAMED, 'invert', launch_flags.PRESET_FLAGS)
