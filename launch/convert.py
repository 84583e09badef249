r"""Converts an official PGGAN checkpoint into a pmsfc_jax generator checkpoint directory.

  python -m launch.convert --source=karras2018iclr-celebahq-1024x1024.pkl --output=ckpt/pggan_celebahq
  python -m launch.convert --source=pggan_bedroom256_generator.pth --output=ckpt/pggan_bedroom

Formats (``--source_format``, default auto = by extension, else by the file's first bytes):
  nvidia_tf_pkl   NVIDIA's TensorFlow (G, D, Gs) pickles, read without TensorFlow by a restricted unpickler
  mganprior_pth   mGANprior / PmSFC / InterFaceGAN PyTorch state dicts, read with torch.load(weights_only=True)
The architecture is read from the file; the optional --resolution/--z_dim/--fmaps_base/--fmaps_max/
--fused_scale flags are checked against it (a mismatch is an error). See docs/conversion.md.
"""

from absl import flags

from launch import flags as launch_flags
from weights_conversion import convert

flags.DEFINE_string('source', None, 'Checkpoint file to convert (.pkl or .pth). Required.')
flags.DEFINE_enum('source_format', None, ['auto', *convert.FORMATS], 'Source file format (default auto).')
SHARED = (
  'output',
  'force',
  *launch_flags.ARCHITECTURE,
)  # the architecture: expected, checked against the file


def main(argv):
  launch_flags.check(argv, SHARED, required=('source', 'output'))
  launch_flags.call(
    convert.main,
    **launch_flags.given(
      'source',
      'output',
      'source_format',
      'force',
      'resolution',
      'z_dim',
      'fmaps_base',
      'fmaps_max',
      'fused_scale',
    ),
  )


if __name__ == '__main__':
  launch_flags.start(main, None, SHARED)
