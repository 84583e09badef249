r"""Batch GAN inversion (PmSFC or mGANprior) of a folder / glob / list of images; resumable.

  python -m launch.invert --generator=DIR_OR_NAME --subspaces=DISCOVER_OUT_OR_NAME \
    --images=DIR_OR_GLOB_OR_LIST --output_dir=OUT --method=pmsfc|mganprior \
    --task=reconstruct|colorize|super_resolve|inpaint [--mask=PNG] [--factor=N] \
    --iterations=N --batch_size=B --num_codes=K [--checkpoint_every=N] [--distributed] \
    [--preset=fast|local] [--config.optim.lr=0.5] [--config=launch/configs/invert.py:mganprior,colorize]

Without ``--config`` the config is ``launch/configs/invert.py`` with the presets ``--method``, ``--task``
and ``--preset`` (e.g. ``fast`` / ``local``), then any ``--config.SECTION.KEY=VALUE``; named flags override
it. With ``--config=FILE[:presets]`` the named ``--method`` / ``--task`` must agree with it. Writes
OUT/<stem>.png, OUT/<stem>.npz, OUT/manifest.jsonl, OUT/summary.json (see pmsfc_jax/jobs/invert/ and
docs/batch_inversion.md) and prints a summary table. Exit status (pmsfc_jax/jobs/exit_codes.py): 0 all
ok, 1 some images failed or pending, 2 a usage / config / path error (one line) or an output directory
holding another configuration, 75 the output directory is locked by another job, 143 preempted (rerun).
With ``--distributed`` run the same command on every host: one global mesh over every device of every
host (``--config.job.mesh=global``, the default; ``host``: independent hosts), every host exiting with
the job's status (docs/batch_inversion.md, "On a TPU pod slice").
"""

from launch import flags as launch_flags
from pmsfc_jax.core import config
from pmsfc_jax.jobs.invert import job

NAMED = {
  'generator': 'model.generator',
  'subspaces': 'model.subspaces',
  'images': 'job.images',
  'output_dir': 'job.output_dir',
  'method': 'method.name',
  'task': 'task.name',
  'preset': None,
  'mask': 'task.mask',
  'factor': 'task.factor',
  'iterations': 'optim.iterations',
  'batch_size': 'job.batch_size',
  'num_codes': 'method.num_codes',
  'checkpoint_every': 'job.checkpoint_every',
  'seed': 'seed',
  'distributed': 'job.distributed',
  'coordinator_address': 'job.coordinator_address',
  'num_processes': 'job.num_processes',
  'process_id': 'job.process_id',
  'overwrite_config': 'job.overwrite_config',
  'retry_failed': 'job.retry_failed',
}


def main(argv):
  return launch_flags.run_config(argv, job.main, config.InvertConfig, NAMED)


if __name__ == '__main__':
  launch_flags.start(main, config.InvertConfig, NAMED, 'invert', launch_flags.PRESET_FLAGS)
