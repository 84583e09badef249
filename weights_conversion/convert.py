"""Format detection and the one-call conversion used by ``python -m launch.convert``."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from absl import logging
from etils import epath

from pmsfc_jax.io import checkpoints
from pmsfc_jax.models import pggan
from weights_conversion import mganprior_pth
from weights_conversion import nvidia_tf_pkl
from weights_conversion.common import ConversionError

FORMATS = (nvidia_tf_pkl.FORMAT, mganprior_pth.FORMAT)
_TORCH_LEGACY_MAGIC = (
  b'\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19'  # pickled torch magic number 0x1950a86a20f9469cfc6c
)


def detect_format(path: str | os.PathLike) -> str:
  """``nvidia_tf_pkl`` or ``mganprior_pth`` from the extension, else from the first bytes."""
  p = epath.Path(path)
  suffix = p.suffix.lower()
  if suffix in ('.pkl', '.pickle'):
    return nvidia_tf_pkl.FORMAT
  if suffix in ('.pth', '.pt'):
    return mganprior_pth.FORMAT
  with p.open('rb') as f:
    head = f.read(16)
  if head.startswith(b'PK\x03\x04') or head.startswith(_TORCH_LEGACY_MAGIC):
    return mganprior_pth.FORMAT  # torch.save zip archive / legacy torch serialization.
  if head[:1] == b'\x80':
    return nvidia_tf_pkl.FORMAT  # A plain pickle.
  raise ConversionError(
    f'{path}: cannot detect the format (not a pickle nor a torch file); pass '
    f'--source_format={"|".join(FORMATS)}'
  )


def convert_file(
  source: str | os.PathLike, source_format: str = 'auto', **config_overrides
) -> tuple[pggan.GeneratorConfig, Any, dict]:
  """Reads ``source`` -> (GeneratorConfig, params, meta). ``config_overrides`` must agree with the file."""
  source = epath.Path(source)
  if not source.exists():
    raise FileNotFoundError(f'--source {source} does not exist')
  if source.is_dir():
    raise ConversionError(
      f'--source {source} is a directory; expected a .pkl or .pth file (a converted '
      'generator directory needs no conversion: pass it to --generator directly)'
    )
  fmt = detect_format(source) if source_format == 'auto' else source_format
  if fmt == nvidia_tf_pkl.FORMAT:
    config, params = nvidia_tf_pkl.convert(source, **config_overrides)
  elif fmt == mganprior_pth.FORMAT:
    config, params = mganprior_pth.convert(source, **config_overrides)
  else:
    raise ConversionError(f'unknown --source_format {source_format!r}; expected auto or one of {FORMATS}')
  digest = hashlib.sha256()
  with source.open('rb') as f:
    for chunk in iter(lambda: f.read(1 << 24), b''):
      digest.update(chunk)
  meta = {
    'source': os.fspath(source),
    'source_name': source.name,
    'format': fmt,
    'sha256': digest.hexdigest(),
  }
  return config, params, meta


def convert_and_save(
  source: str | os.PathLike,
  output: str | os.PathLike,
  source_format: str = 'auto',
  force: bool = False,
  **config_overrides,
) -> pggan.GeneratorConfig:
  """Converts ``source`` and writes the orbax generator checkpoint ``output`` (loadable by path alone)."""
  config, params, meta = convert_file(source, source_format, **config_overrides)
  checkpoints.save_generator(output, config, params, meta=meta, force=force)
  return config


def main(
  source: str,
  output: str,
  source_format: str = 'auto',
  force: bool = False,
  fused_scale: str | None = None,
  **expected,
) -> pggan.GeneratorConfig:
  """``launch.convert``: converts and saves; ``fused_scale`` 'true' | 'false' | 'auto'; ``expected``
  (resolution, z_dim, fmaps_base, fmaps_max) must agree with the file."""
  fused = {'true': True, 'false': False, 'auto': 'auto', None: None}[fused_scale]
  config = convert_and_save(source, output, source_format, force=force, fused_scale=fused, **expected)
  logging.info('wrote %s: %s', output, config)
  print(f'converted {source} -> {output}: {config}')
  return config
