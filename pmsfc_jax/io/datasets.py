"""Small in-memory image datasets for training the demo generator (issue #7).

Images are decoded once through the project's image pipeline (:func:`pmsfc_jax.io.images.load_image`:
centre square crop, Lanczos resize) into one uint8 array (N, S, S, 3), optionally cached as ``.npy``
next to a JSON description of what it holds, so restarts skip the decoding. A dataset that fits in
memory (9,000 faces at 32x32 are 27 MB) is sampled on the accelerator inside the jitted train step.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
from etils import epath

from pmsfc_jax.io import files
from pmsfc_jax.io import images


def numbered_paths(
  folder: str | os.PathLike, first: int, last: int, pattern: str = '{:06d}.jpg'
) -> list[epath.Path]:
  """``folder/000001.jpg .. folder/NNNNNN.jpg`` (inclusive); fails naming the first missing file."""
  folder = epath.Path(folder)
  if first < 1 or last < first:
    raise ValueError(f'invalid image range [{first}, {last}] for {folder}')
  paths = [folder / pattern.format(i) for i in range(first, last + 1)]
  for p in (paths[0], paths[-1]):
    if not p.exists():
      raise FileNotFoundError(f'training image {p} does not exist (range {first}..{last} in {folder})')
  return paths


def load_images(
  paths: Sequence[str | os.PathLike], size: int, cache: str | os.PathLike | None = None
) -> np.ndarray:
  """Decodes ``paths`` to a uint8 array (N, size, size, 3); reuses / writes ``cache`` (.npy) if given.

  The cache is used only when its sidecar ``<cache>.json`` matches the request (size, count, first and
  last file names); otherwise it is rebuilt. Writes are atomic (temporary name + rename).
  """
  paths = [epath.Path(p) for p in paths]
  if not paths:
    raise ValueError('load_images: no image paths given')
  desc = {'size': int(size), 'count': len(paths), 'first': os.fspath(paths[0]), 'last': os.fspath(paths[-1])}
  if cache is not None:
    cache = epath.Path(cache)
    meta = cache.parent / (cache.name + '.json')
    if cache.exists() and meta.exists():
      try:
        if json.loads(meta.read_text()) == desc:
          with cache.open('rb') as f:
            arr = np.load(f, allow_pickle=False)
          if arr.shape == (len(paths), size, size, 3) and arr.dtype == np.uint8:
            return arr
      except (ValueError, OSError):
        pass  # unreadable cache: rebuild it
  arr = np.empty((len(paths), size, size, 3), np.uint8)
  for i, p in enumerate(paths):
    arr[i] = images.to_uint8(images.load_image(p, size=size, crop='center'))
  if cache is not None:
    if meta.exists():
      meta.unlink()  # the description is written last: a crash in between leaves no valid-looking cache
    files.save_npy(cache, arr)
    files.write_json(meta, desc)
  return arr
