r"""Trains the small PGGAN demo generator (issue #7), resumable; or exports its EMA generator.

  python -m launch.train_pggan --config=launch/configs/train_pggan.py:local --workdir=/tmp/train_demo
  python -m launch.train_pggan --config=launch/configs/train_pggan.py:local --workdir=/tmp/train_demo \
      --export=pmsfc_jax/assets/demo/generator --samples=docs/demo_samples.png

Re-running the same command resumes from the latest checkpoint in WORKDIR/checkpoints. Writes
WORKDIR/metrics.jsonl, WORKDIR/samples/ema_STEP.png (fixed z) and WORKDIR/config.json.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from pmsfc_jax import checkpoints
from pmsfc_jax import training

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Training config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, samples and logs.')
_EXPORT = flags.DEFINE_string('export', None, 'If set, do not train: write the EMA generator of the '
                              "workdir's latest checkpoint to this generator checkpoint directory.")
_FORCE = flags.DEFINE_bool('force', False, 'With --export: overwrite an existing directory.')
_SAMPLES = flags.DEFINE_string('samples', None, 'With --export: also write the grid of the exported '
                               'generator for --seed (16 samples, launch.generate latents) to this PNG.')
_SEED = flags.DEFINE_integer('seed', 0, 'With --samples: the latent seed.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _EXPORT.value:
    path = training.export_generator(_CONFIG.value, _WORKDIR.value, _EXPORT.value, force=_FORCE.value)
    logging.info('wrote %s', path)
    print(path)
    if _SAMPLES.value:
      training.write_demo_samples(checkpoints.load_generator(path), _SAMPLES.value, seed=_SEED.value)
      print(_SAMPLES.value)
    return
  training.train(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
