r"""The main job: invert faces with mGANprior and PmSFC on the shipped demo model, side by side.

  python -m launch.demo                          # embedded default: no data needed
  python -m launch.demo --images=my_faces/ --output_dir=out --iterations=1000
  python -m launch.demo --config=launch/configs/demo.py:local   # a few iterations

Writes OUT/demo_grid.png (target | mGANprior | PmSFC), OUT/metrics.md and OUT/metrics.json.
"""

from launch import flags as launch_flags
from pmsfc_jax.core import config
from pmsfc_jax.jobs import demo

NAMED = {
  'images': 'job.images',
  'output_dir': 'job.output_dir',
  'iterations': 'optim.iterations',
  'generator': 'model.generator',
  'subspaces': 'model.subspaces',
}


def main(argv):
  launch_flags.run_config(argv, demo.run, config.DemoConfig, NAMED)


if __name__ == '__main__':
  launch_flags.start(main, config.DemoConfig, NAMED, 'demo')
