r"""Aligns the faces of photos the way a face generator's training set was aligned (before inverting).

  python -m launch.align --images=DIR_OR_GLOB_OR_LIST --output_dir=OUT --resolution=1024 \
      [--template=celebahq|celeba]

Writes OUT/<stem>.png (the aligned crop), OUT/<stem>.json (the alignment record, for launch.paste) and
OUT/alignment.jsonl (ok / error per input). --template=celebahq (default): the CelebA-HQ / FFHQ square,
for the official CelebA-HQ PGGAN; celeba: the aligned-CelebA framing of the shipped demo model. Needs the
align extra (pip install 'pmsfc-jax[align]'); see docs/alignment.md. Exit status 0 all aligned, 1 some
failed (no face found, unreadable), 2 a usage error.
"""

from absl import flags

from launch import flags as launch_flags
from pmsfc_jax.jobs import align

flags.DEFINE_enum('template', 'celebahq', ['celebahq', 'celeba'], 'Alignment template (docs/alignment.md).')
SHARED = ('images', 'output_dir', 'resolution')


def main(argv):
  launch_flags.check(argv, SHARED, required=SHARED)
  f = launch_flags.FLAGS
  return launch_flags.call(align.run, f.images, f.output_dir, f.resolution, f.template)['exit_code']


if __name__ == '__main__':
  launch_flags.start(main, None, SHARED)
