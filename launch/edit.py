r"""Edits an inverted image by subspace exchange (paper Fig. 4) from two ``launch.invert`` results.

  python -m launch.edit --generator=ckpt/pggan_celebahq --inverted=inverted/a.npz --donor=inverted/b.npz \
      --subspace=1 --output=a_with_b_subspace1.png [--subspaces=celebahq] [--paste_back]

Writes ``--output`` (PNG): the first image with the channels of subspace ``--subspace`` (0 = the
largest) of its composed layer-3 features taken from the donor, decoded by G2. The subspace masks are
those the results record (``--subspaces`` overrides them; needed for mGANprior results). With
``--paste_back`` (results inverted with ``--config.task.align=face``) ``--output`` is the original photo
with the edited face pasted back in. See pmsfc_jax/jobs/edit.py.
"""

from absl import app
from absl import flags

from launch import flags as launch_flags
from pmsfc_jax.jobs import edit

flags.DEFINE_string('inverted', None, 'The result .npz (launch.invert) to edit. Required.')
flags.DEFINE_string('donor', None, 'The result .npz whose subspace features are taken. Required.')
flags.DEFINE_integer('subspace', None, 'The subspace r to exchange (0 = the largest). Required.')
flags.DEFINE_bool(
  'paste_back', False, 'Write the photo --inverted was aligned from, with the edited face pasted in.'
)
SHARED = ('generator', 'subspaces', 'output')


def main(argv):
  launch_flags.check(argv, SHARED, required=('generator', 'inverted', 'donor', 'output'))
  if flags.FLAGS.subspace is None:  # check() treats 0 as missing
    raise app.UsageError('--subspace is required')
  launch_flags.call(edit.run, **launch_flags.given(*SHARED, 'inverted', 'donor', 'subspace', 'paste_back'))


if __name__ == '__main__':
  launch_flags.start(main, None, SHARED)
