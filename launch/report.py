r"""Rebuilds the browsable report of a batch-inversion folder from what is on disk.

  python -m launch.report --output_dir=OUT

Writes OUT/report.html (pmsfc_jax/jobs/invert/report.py) from OUT/manifest*.jsonl and OUT/summary.json;
``launch.invert`` writes it at the end of every run already. Exit status 2 when OUT holds no manifest.
"""

from launch import flags as launch_flags
from pmsfc_jax.jobs.invert import summary

SHARED = ('output_dir',)


def main(argv):
  launch_flags.check(argv, SHARED, required=SHARED)
  path = launch_flags.call(summary.rebuild_report, launch_flags.FLAGS.output_dir)
  print(f'wrote {path}')


if __name__ == '__main__':
  launch_flags.start(main, None, SHARED)
