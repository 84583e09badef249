"""Inpainting masks: an mGANprior mask PNG (white = hole) -> the known-pixel mask P of Eq. 9 uses."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
from etils import epath
from PIL import Image


def load_inpainting_mask(
  path: str | os.PathLike, size: Optional[int] = None, threshold: Optional[float] = 0.5
) -> np.ndarray:
  """Read an mGANprior mask PNG (white = hole) and return the KNOWN-pixel mask (H, W, 1) float32.

  RGB(A) and L/LA/P images are accepted: the hole value is the RGB mean in [0, 1] (an alpha channel is
  ignored, as mGANprior keeps only the first 3 channels). ``size`` resizes with nearest neighbour to
  ``size x size``. ``threshold``: pixels whose hole value is > threshold are holes (binary mask, the
  default); ``None`` keeps mGANprior's soft weights ``known = 1 - value`` (anti-aliased mask edges).
  """
  p = epath.Path(path)
  try:
    with p.open('rb') as f:
      img = Image.open(f)
      img.load()
  except FileNotFoundError:
    raise FileNotFoundError(f'inpainting mask {os.fspath(path)} does not exist') from None
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
  return (1.0 - hole)[..., None].astype(np.float32)
