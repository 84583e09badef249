r"""Batch GAN inversion (PmSFC or mGANprior) of a folder / glob / list of images; resumable.

  python -m launch.invert --generator=DIR_OR_NAME --subspaces=DISCOVER_OUT_OR_NAME \
    --images=DIR_OR_GLOB_OR_LIST --output_dir=OUT --method=pmsfc|mganprior \
    --task=reconstruct|colorize|super_resolve|inpaint [--mask=PNG] [--factor=N] \
    --iterations=N --batch_size=B --num_codes=K [--checkpoint_every=N] [--distributed] \
    [--config=launch/configs/invert.py:mganprior,colorize --config.lr=0.5]

Without ``--config`` the config is ``launch/configs/invert.py`` with the presets ``--method``,
``--task`` and ``--preset`` (e.g. ``fast`` / ``local``), then any ``--config.KEY=VALUE``; named flags
override it. With ``--config=FILE[:presets]`` the named ``--method`` / ``--task`` must agree with it. Writes OUT/<stem>.png, OUT/<stem>.npz,
OUT/manifest.jsonl, OUT/summary.json (see pmsfc_jax/pipeline.py and docs/batch_inversion.md) and prints a
summary table. Exit status: 0 all ok, 1 some images failed, 143 preempted (SIGTERM; rerun to resume).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from pmsfc_jax import pipeline

_CONFIG_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs', 'invert.py')

_CONFIG = config_flags.DEFINE_config_file('config', _CONFIG_PATH, 'Inversion config file[:presets] '
                                          '(default: launch/configs/invert.py with --method/--task/--preset).',
                                          lock_config=False)
_GENERATOR = flags.DEFINE_string('generator', None, 'Generator checkpoint directory or shipped name.')
_SUBSPACES = flags.DEFINE_string('subspaces', None, 'launch.discover output directory or shipped name '
                                 '(not needed with --method=mganprior).')
_IMAGES = flags.DEFINE_string('images', None, 'Directory (recursive), glob, or text file listing images.')
_OUTPUT = flags.DEFINE_string('output_dir', None, 'Output directory.')
_METHOD = flags.DEFINE_enum('method', None, ['pmsfc', 'mganprior'], 'Inversion method.')
_TASK = flags.DEFINE_enum('task', None, ['reconstruct', 'colorize', 'super_resolve', 'inpaint'], 'Task.')
_PRESET = flags.DEFINE_string('preset', '', "Extra config presets, e.g. 'fast' or 'local' (no --config).")
_MASK = flags.DEFINE_string('mask', None, 'Inpainting mask PNG (white = hole).')
_FACTOR = flags.DEFINE_integer('factor', None, 'Super-resolution factor (inputs are resolution/factor).')
_ITERATIONS = flags.DEFINE_integer('iterations', None, 'Optimisation steps per image.')
_BATCH = flags.DEFINE_integer('batch_size', None, 'Images per batch (rounded up to the device count).')
_NUM_CODES = flags.DEFINE_integer('num_codes', None, 'K codes per subspace (pmsfc) or N codes (mganprior).')
_LR = flags.DEFINE_float('lr', None, 'Learning rate.')
_SEED = flags.DEFINE_integer('seed', None, 'Base seed of the per-image keys.')
_CKPT = flags.DEFINE_integer('checkpoint_every', None, 'Save the batch state every N steps (0: never).')
_CROP = flags.DEFINE_enum('crop', None, ['center', 'pad'], 'Non-square inputs: centre crop or white pad.')
_NUM_DEVICES = flags.DEFINE_integer('num_devices', None, 'Use only the first N local devices (0: all).')
_LPIPS = flags.DEFINE_bool('lpips', None, 'Also compute LPIPS against the target.')
_WORKERS = flags.DEFINE_integer('num_workers', None, 'Image decoding threads (default 4).')
_PREFETCH = flags.DEFINE_integer('prefetch_batches', None, 'Batches decoded ahead (default 2).')
_LOG_EVERY = flags.DEFINE_float('log_every_s', None, 'Seconds between progress lines (default 30).')
_OVERWRITE = flags.DEFINE_bool('overwrite_config', False, 'Accept a changed configuration in an existing '
                               'output directory: discard its manifest/checkpoints and redo every image.')
_FORCE = flags.DEFINE_bool('force', False, 'Alias of --overwrite_config.')
_RETRY = flags.DEFINE_bool('retry_failed', False, 'Retry images whose manifest line is an error.')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'Multi-host: call jax.distributed.initialize().')
_COORD = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (--distributed; '
                             'default: $PMSFC_COORDINATOR_ADDRESS or cluster auto-detection).')
_NPROC = flags.DEFINE_integer('num_processes', None, 'Number of processes (--distributed).')
_PID = flags.DEFINE_integer('process_id', None, 'This process index (--distributed).')


def build_config():
  """The job config from --config / presets plus the named flags."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  if not flags.FLAGS['config'].present:
    # Default config file: presets from the named flags, then any --config.KEY=VALUE overrides.
    spec = importlib.util.spec_from_file_location('pmsfc_invert_config', _CONFIG_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    presets = [p for p in (_METHOD.value, _TASK.value) if p] + [p for p in _PRESET.value.split(',') if p]
    config = module.get_config(','.join(presets) or None)
    config.update_from_flattened_dict(config_flags.get_override_values(flags.FLAGS['config']))
  else:
    if _PRESET.value:
      raise app.UsageError('--preset only applies without --config (put presets after --config=FILE:)')
    for flag, key in ((_METHOD, 'method'), (_TASK, 'task')):
      if flag.value is not None and flag.value != config[key]:
        raise app.UsageError(f'--{key}={flag.value} conflicts with the config ({key}={config[key]!r}); '
                             f'choose it with --config=...:{flag.value}')
  config = pipeline.with_job_defaults(config)
  named = {'generator': _GENERATOR, 'subspaces': _SUBSPACES, 'images': _IMAGES, 'output_dir': _OUTPUT,
           'mask': _MASK, 'factor': _FACTOR, 'iterations': _ITERATIONS, 'batch_size': _BATCH,
           'num_codes': _NUM_CODES, 'lr': _LR, 'seed': _SEED, 'checkpoint_every': _CKPT, 'crop': _CROP,
           'num_devices': _NUM_DEVICES, 'lpips': _LPIPS, 'num_workers': _WORKERS,
           'prefetch_batches': _PREFETCH, 'log_every_s': _LOG_EVERY, 'coordinator_address': _COORD,
           'num_processes': _NPROC, 'process_id': _PID}
  for key, flag in named.items():
    if flag.value is not None:
      config[key] = flag.value
  config.overwrite_config = bool(_OVERWRITE.value or _FORCE.value or config.overwrite_config)
  config.retry_failed = bool(_RETRY.value or config.retry_failed)
  config.distributed = bool(_DISTRIBUTED.value or config.distributed)
  for key in ('images', 'output_dir', 'generator'):
    if not config[key]:
      raise app.UsageError(f'--{key} is required')
  return config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = build_config()
  try:
    summary = pipeline.run(config)
  except pipeline.ConfigMismatchError as e:
    logging.error('%s', e)
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(pipeline.format_summary(config.output_dir, summary))
  return summary['exit_code']


if __name__ == '__main__':
  app.run(main)
