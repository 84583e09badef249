r"""Small-scale reproduction of Tables 1-3 on held-out faces (mGANprior vs PmSFC at equal iterations).

  python -m launch.reproduce --output_dir=reproduce_out [--config.num_images=100 --config.iterations=200]

Writes OUT/reproduction.md (the README's table), OUT/reproduction.json and per-task grids.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from pmsfc_jax import reproduce

_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs', 'reproduce.py'),
    'Reproduction config (launch/configs/reproduce.py[:local]).', lock_config=False)
_OUTPUT = flags.DEFINE_string('output_dir', None, 'Output directory (default reproduce_out).')
_IMAGES = flags.DEFINE_string('images', None, 'Held-out faces (glob / directory / list).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  if _OUTPUT.value:
    config.output_dir = _OUTPUT.value
  if _IMAGES.value:
    config.images = _IMAGES.value
  reproduce.run(config)


if __name__ == '__main__':
  app.run(main)
