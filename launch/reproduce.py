r"""Small-scale reproduction of Tables 1-3 on held-out faces (mGANprior vs PmSFC at equal iterations).

  python -m launch.reproduce --output_dir=reproduce_out [--config.reproduce.num_images=100 \
    --config.optim.iterations=200]

Writes OUT/reproduction.md (the README's table), OUT/reproduction.json and per-task grids.
"""

from launch import flags as launch_flags
from pmsfc_jax.core import config
from pmsfc_jax.jobs import reproduce

NAMED = {'output_dir': 'job.output_dir', 'images': 'job.images'}


def main(argv):
  launch_flags.run_config(argv, reproduce.run, config.ReproduceConfig, NAMED)


if __name__ == '__main__':
  launch_flags.start(main, config.ReproduceConfig, NAMED, 'reproduce')
