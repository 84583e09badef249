"""Paste an aligned face back into its photo (``launch.paste``, ``launch.edit --paste_back``).

A result inverted with ``--config.task.align=face`` carries its alignment record in its ``.npz``
(``alignment``); ``launch.align`` writes it as ``<stem>.json``. The record's similarity (photo -> crop)
is inverted to warp the face (the inversion result, an edit, or any image of the crop) back onto the
original photo, blended through a feathered square mask (``io/alignment.py: paste``; the outer
``feather`` fraction of the crop fades out). For a user who started from a photo, this pasted photo is
the natural result. The photo is read as the job read it (EXIF orientation applied, alpha on white).
"""

from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from pmsfc_jax.core import config
from pmsfc_jax.io import alignment
from pmsfc_jax.io import files
from pmsfc_jax.io import images

FEATHER = 0.1


def load_record(path: str) -> dict:
  """The alignment record of a ``launch.invert`` result ``.npz`` or a ``launch.align`` ``.json``."""
  p = files.absolute(path)
  if not p.exists():
    raise ValueError(f'{path} does not exist')
  try:
    if os.fspath(path).endswith('.npz'):
      with p.open('rb') as f, np.load(f, allow_pickle=False) as z:
        if 'alignment' not in z:
          raise ValueError('records no alignment (invert with --config.task.align=face to get one)')
        rec = json.loads(str(z['alignment']))
    else:
      rec = json.loads(p.read_text())
    np.asarray(rec['matrix'], np.float64).reshape(3, 3)
    int(rec['size'])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f'{path}: not an alignment record ({e})') from None
  return rec


def paste_into_photo(
  rec: dict, face: np.ndarray, photo: Optional[str] = None, feather: float = FEATHER
) -> np.ndarray:
  """uint8 photo (the record's source, or ``photo``) with ``face`` (float [-1, 1], any square size) pasted."""
  source = photo or rec['source']
  pil = images.decode_pil(images.read_bytes(source), source)
  if 'source_size' in rec and list(pil.size) != list(rec['source_size']):
    raise ValueError(f'{source} is {pil.size[0]}x{pil.size[1]}, the record was made on {rec["source_size"]}')
  return alignment.paste(np.asarray(pil), face, np.asarray(rec['matrix']), int(rec['size']), feather)


def _flag(flag: str, value, fn, *args, **kwargs):
  try:
    return fn(*args, **kwargs)
  except (OSError, ValueError) as e:
    raise config.ConfigError(f'--{flag}={value}: {e}') from None


def run(
  alignment_record: str,
  output: str,
  image: Optional[str] = None,
  photo: Optional[str] = None,
  feather: float = FEATHER,
) -> np.ndarray:
  """Writes ``output`` (PNG): ``image`` (default: the ``<stem>.png`` beside the record: the inversion
  result, or ``launch.align``'s crop) pasted into the record's photo (or ``photo``); returns it."""
  rec = _flag('alignment', alignment_record, load_record, alignment_record)
  image = image or os.path.splitext(alignment_record)[0] + '.png'
  face = _flag('image', image, images.load_image, image)
  if face.shape[0] != face.shape[1]:
    raise config.ConfigError(f'--image={image}: not a square crop ({face.shape[1]}x{face.shape[0]})')
  out = _flag('photo', photo or rec['source'], paste_into_photo, rec, face, photo, feather)
  images.save_image(output, images.to_float(out))
  print(f'wrote {output}: {image} pasted into {photo or rec["source"]}')
  return out
