r"""The fair small-scale reproduction of Tables 1-3 on held-out aligned CelebA faces (demo model).

  python -m launch.reproduce --images=img_align_celeba_009001-009100/ --output_dir=reproduce_out
  python -m launch.reproduce --images='faces/*.jpg' --num_images=2 --config.reproduce.slow_images=2

Rows: mGANprior at its own settings, PmSFC at the paper's (equal iterations), both at a shared fast
setting, PmSFC fast with Eq. 9 as written (pmsfc_jax/jobs/reproduce.py). Writes OUT/reproduction.md (the
README's tables), OUT/reproduction.json and per-task grids; rerunning resumes finished rows. Without
--images it says what to pass, in one line (exit status 2, a usage error: pmsfc_jax/jobs/exit_codes.py).
"""

import sys

from launch import flags as launch_flags
from pmsfc_jax.core import config
from pmsfc_jax.jobs import exit_codes
from pmsfc_jax.jobs import reproduce

NAMED = {'output_dir': 'job.output_dir', 'images': 'job.images', 'num_images': 'reproduce.num_images'}


def main(argv):
  try:
    launch_flags.run_config(argv, reproduce.run, config.ReproduceConfig, NAMED)
  except reproduce.MissingInputError as e:
    sys.stderr.write(f'launch.reproduce: {e}\n')
    sys.exit(exit_codes.USAGE)


if __name__ == '__main__':
  launch_flags.start(main, config.ReproduceConfig, NAMED, 'reproduce')
