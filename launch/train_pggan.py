r"""Trains the small PGGAN demo generator (issue #7), resumable; or exports its EMA generator.

  python -m launch.train_pggan --config=launch/configs/train_pggan.py:local --workdir=/tmp/train_demo \
      --config.data.folder=img_align_celeba
  python -m launch.train_pggan --config=launch/configs/train_pggan.py:local --workdir=/tmp/train_demo \
      --export=pmsfc_jax/assets/demo/generator --samples=docs/demo_samples.png

Re-running the same command resumes from the latest checkpoint in WORKDIR/checkpoints. Writes
WORKDIR/metrics.jsonl, WORKDIR/samples/ema_STEP.png (fixed z) and WORKDIR/config.json. SIGTERM / SIGINT:
the step in progress finishes, its state is saved and the job exits with status 143 (rerun to resume).
"""

from absl import flags

from launch import flags as launch_flags
from pmsfc_jax.core import gan
from pmsfc_jax.jobs import train_pggan

flags.DEFINE_string('workdir', None, 'Directory for checkpoints, samples and logs.')
flags.DEFINE_string(
  'export',
  None,
  "If set, do not train: write the EMA generator of the workdir's latest "
  'checkpoint to this generator checkpoint directory (--force overwrites it).',
)
flags.DEFINE_string(
  'samples',
  None,
  'With --export: also write the grid of the exported generator for --seed '
  '(16 samples, launch.generate latents) to this PNG.',
)
NAMED = {'force': None, 'seed': None}


def main(argv):
  launch_flags.check(argv, ['config', *NAMED], required=('workdir',))
  cfg = launch_flags.config(gan.TrainConfig, NAMED)
  launch_flags.call(
    train_pggan.main, cfg, flags.FLAGS.workdir, **launch_flags.given('export', 'samples', 'force', 'seed')
  )


if __name__ == '__main__':
  launch_flags.start(main, gan.TrainConfig, NAMED)
