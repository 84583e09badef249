"""Inpainting masks: an mGANprior mask PNG (white = hole) -> the known-pixel mask P of Eq. 9 uses."""

from __future__ import annotations

import io
import os
from typing import Optional

import numpy as np
from etils import epath
from PIL import Image

from pmsfc_jax.io import images


def load_inpainting_mask(
  path: str | os.PathLike, size: Optional[int] = None, threshold: Optional[float] = 0.5
) -> np.ndarray:
  """Read an mGANprior mask PNG (white = hole) and return the KNOWN-pixel mask (H, W, 1) float32.

  RGB(A) and L/LA/P images are accepted: the hole value is the RGB mean in [0, 1] (an alpha channel is
  ignored, as mGANprior keeps only the first 3 channels). ``size`` resizes with nearest neighbour to
  ``size x size``. ``threshold``: pixels whose hole value is > threshold are holes (binary mask, the
  default); ``None`` keeps mGANprior's soft weights ``known = 1 - value`` (anti-aliased mask edges).
  A mask without any known pixel (an all-hole mask: loss 0 at every step) or without any hole is refused
  (``ValueError`` naming ``--mask``): either would report a meaningless run as a success.
  """
  if not epath.Path(path).exists():
    raise FileNotFoundError(f'inpainting mask {os.fspath(path)} does not exist')
  try:
    img = Image.open(io.BytesIO(images.read_bytes(path)))  # bounded read: regular files only
    img.load()
  except images.ImageDecodeError as e:
    raise ValueError(f'inpainting mask {os.fspath(path)}: cannot be read as an image ({e.reason})') from None
  except Exception as e:  # PIL raises many types.
    raise ValueError(f'inpainting mask {os.fspath(path)}: cannot be read as an image ({e})') from None
  if img.mode in ('RGBA', 'LA', 'PA', 'P', 'I;16', 'I', 'F', '1', 'CMYK'):
    img = img.convert('RGB') if img.mode not in ('LA', '1') else img.convert('L')
  if size is not None:
    img = img.resize((int(size), int(size)), Image.NEAREST)
  arr = np.asarray(img, np.float32) / 255.0
  if arr.ndim == 3:
    arr = arr[..., :3].mean(-1)
  hole = arr if threshold is None else (arr > threshold).astype(np.float32)
  known = (1.0 - hole)[..., None].astype(np.float32)
  where = (
    f'--mask={os.fspath(path)}: the inpainting mask (white = hole, at {known.shape[1]}x{known.shape[0]})'
  )
  if not np.any(known > 0):
    raise ValueError(f'{where} has no known pixel: the objective would be 0 at every step')
  if np.all(known >= 1):
    raise ValueError(f'{where} has no hole: there is nothing to inpaint')
  return known
