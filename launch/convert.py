r"""Converts an official PGGAN checkpoint into a pmsfc_jax generator checkpoint directory.

  python -m launch.convert --source=karras2018iclr-celebahq-1024x1024.pkl --output=ckpt/pggan_celebahq
  python -m launch.convert --source=pggan_bedroom256_generator.pth --output=ckpt/pggan_bedroom

Formats (``--source_format``, default auto = by extension, else by the file's first bytes):
  nvidia_tf_pkl   NVIDIA's TensorFlow (G, D, Gs) pickles, read without TensorFlow by a restricted unpickler
  mganprior_pth   mGANprior / PmSFC / InterFaceGAN PyTorch state dicts, read with torch.load(weights_only=True)
The architecture is read from the file; the optional --resolution/--z_dim/--fmaps_base/--fmaps_max/
--fused_scale flags are checked against it (a mismatch is an error). See docs/conversion.md.
"""

from absl import app, flags, logging

from weights_conversion import convert

_SOURCE = flags.DEFINE_string('source', None, 'Checkpoint file to convert (.pkl or .pth). Required.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output generator checkpoint directory. Required.')
_FORMAT = flags.DEFINE_enum('source_format', 'auto', ['auto', *convert.FORMATS], 'Source file format.')
_FORCE = flags.DEFINE_bool('force', False, 'Overwrite --output if it exists.')
_RESOLUTION = flags.DEFINE_integer('resolution', None, 'Expected resolution (checked against the file).')
_Z_DIM = flags.DEFINE_integer('z_dim', None, 'Expected latent size (checked against the file).')
_FMAPS_BASE = flags.DEFINE_integer('fmaps_base', None, 'nf(res) = min(fmaps_base // res, fmaps_max).')
_FMAPS_MAX = flags.DEFINE_integer('fmaps_max', None, 'Maximum channel count.')
_FUSED = flags.DEFINE_enum('fused_scale', None, ['true', 'false', 'auto'], 'Expected fused upsampling.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for flag in (_SOURCE, _OUTPUT):
    if not flag.value:
      raise app.UsageError(f'--{flag.name} is required')
  fused = {'true': True, 'false': False, 'auto': 'auto', None: None}[_FUSED.value]
  config = convert.convert_and_save(
      _SOURCE.value, _OUTPUT.value, _FORMAT.value, force=_FORCE.value, resolution=_RESOLUTION.value,
      z_dim=_Z_DIM.value, fmaps_base=_FMAPS_BASE.value, fmaps_max=_FMAPS_MAX.value, fused_scale=fused)
  logging.info('wrote %s: %s', _OUTPUT.value, config)
  print(f'converted {_SOURCE.value} -> {_OUTPUT.value}: {config}')


if __name__ == '__main__':
  app.run(main)
