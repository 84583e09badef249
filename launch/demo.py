r"""The main job: invert faces with mGANprior and PmSFC on the shipped demo model, side by side.

  python -m launch.demo                          # embedded default: no data needed
  python -m launch.demo --images=my_faces/ --output_dir=out --iterations=1000

Writes OUT/demo_grid.png (target | mGANprior | PmSFC), OUT/metrics.md and OUT/metrics.json.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from pmsfc_jax import demo

_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs', 'demo.py'),
    'Demo config (launch/configs/demo.py[:local]).', lock_config=False)
_IMAGES = flags.DEFINE_string('images', None, 'Your own faces: directory, glob or list file.')
_OUTPUT = flags.DEFINE_string('output_dir', None, 'Output directory (default demo_out).')
_ITERATIONS = flags.DEFINE_integer('iterations', None, 'Steps per method and image.')
_GENERATOR = flags.DEFINE_string('generator', None, "Generator directory or shipped name ('demo').")
_SUBSPACES = flags.DEFINE_string('subspaces', None, "Subspace directory or shipped name ('demo').")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  for flag, key in ((_IMAGES, 'images'), (_OUTPUT, 'output_dir'), (_ITERATIONS, 'iterations'),
                    (_GENERATOR, 'generator'), (_SUBSPACES, 'subspaces')):
    if flag.value is not None:
      config[key] = flag.value
  demo.run_demo(config)


if __name__ == '__main__':
  app.run(main)
