r"""Prior subspace discovery CLI (paper Algorithm 1): learn S, cluster the channels, write a subspace dir.

  python -m launch.discover --generator=demo --layer=3 --num_subspaces=6 --iterations=3000 \
      --batch_size=4 --affinity=paper --output_dir=/tmp/subspaces
  python -m launch.discover --self_expressive_matrix=../shared/data/official/celebahq_layer3_S.npy \
      --matrix_layout=official --num_subspaces=6 --affinity=dsc --output_dir=/tmp/celebahq_subspaces

Flags given on the command line override ``--config`` (default ``launch/configs/discover.py``; use
``launch/configs/discover.py:local`` for a CPU-sized run). The output directory holds an orbax checkpoint
``result/`` (S, masks, labels, history, config), the training checkpoints ``checkpoints/`` (a rerun
resumes from there), ``S.npy``, ``masks.npy`` (R x C bool), ``labels.npy``, ``subspaces.json`` and PNGs
(losses, affinity, one exchange grid per subspace); ``pmsfc_jax.discovery.load_subspaces(OUT)`` reads it.
"""

import logging as pylogging
import pathlib

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from pmsfc_jax import discovery

_CONFIG = config_flags.DEFINE_config_file(
    'config', str(pathlib.Path(__file__).parent / 'configs' / 'discover.py'),
    'ml_collections config file (append :local for the small CPU variant).')
flags.DEFINE_string('generator', None, 'Generator checkpoint directory or shipped name (e.g. demo).')
flags.DEFINE_integer('layer', None, 'Split layer (paper: 3).')
flags.DEFINE_integer('num_subspaces', None, 'Number of subspaces R.')
flags.DEFINE_integer('iterations', None, 'Training iterations of S (paper: 3000).')
flags.DEFINE_integer('batch_size', None, 'Latents per iteration (global, sharded over the devices).')
flags.DEFINE_enum('affinity', None, ['paper', 'dsc'], 'Affinity/clustering route.')
flags.DEFINE_string('output_dir', None, 'Output (subspace) directory.')
flags.DEFINE_string('self_expressive_matrix', None, 'S.npy to cluster instead of training.')
flags.DEFINE_enum('matrix_layout', None, ['paper', 'official'], 'Layout of --self_expressive_matrix.')
flags.DEFINE_integer('seed', None, 'Random seed.')
flags.DEFINE_float('lr', None, 'Adam learning rate (paper: 1e-4).')

_MAPPED = ('generator', 'layer', 'num_subspaces', 'iterations', 'batch_size', 'affinity', 'output_dir',
           'self_expressive_matrix', 'matrix_layout', 'seed', 'lr')


class _QuietLibraries(pylogging.Filter):
  """Drops orbax's INFO chatter (dozens of lines per checkpoint) so the progress lines stay readable."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING or '/orbax/' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  config = _CONFIG.value
  with config.unlocked():
    for name in _MAPPED:
      if flags.FLAGS[name].present:
        config[name] = flags.FLAGS[name].value
  discovery.run(config)


if __name__ == '__main__':
  flags.mark_flag_as_required('output_dir')
  app.run(main)
