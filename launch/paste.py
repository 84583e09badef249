r"""Pastes an aligned face (an inversion result, an edit) back into the photo it was aligned from.

  python -m launch.paste --alignment=OUT/<stem>.npz --output=pasted.png [--image=edited.png] \
      [--photo=original.jpg] [--feather=0.1]

--alignment: a launch.invert result inverted with --config.task.align=face (its .npz), or a launch.align
record (<stem>.json). --image defaults to the <stem>.png beside it; --photo to the photo the record names.
The face is warped back through the inverse alignment and blended with a feathered mask
(pmsfc_jax/jobs/paste.py).
"""

from absl import app
from absl import flags

from launch import flags as launch_flags
from pmsfc_jax.jobs import paste

flags.DEFINE_string(
  'alignment', None, 'Result .npz (launch.invert, task.align=face) or .json (launch.align).'
)
flags.DEFINE_string('image', None, 'The square face image to paste (default: <stem>.png beside --alignment).')
flags.DEFINE_string('photo', None, 'The photo to paste into (default: the one the record names).')
flags.DEFINE_float('feather', paste.FEATHER, 'Fraction of the crop over which the mask fades out.')
SHARED = ('output',)


def main(argv):
  launch_flags.check(argv, SHARED, required=SHARED)
  f = launch_flags.FLAGS
  if not f.alignment:
    raise app.UsageError('--alignment is required')
  launch_flags.call(paste.run, f.alignment, f.output, f.image, f.photo, f.feather)


if __name__ == '__main__':
  launch_flags.start(main, None, SHARED)
