"""Golden (z, image) pairs: does a converted generator reproduce the images its authors published?

A golden folder (``tests/data/golden/<model>/``) holds ``z.npy`` ((n, z_dim) float32, row i = the latent
of ``names[i]``), the reference PNGs (RGB uint8) and ``golden.json`` (names, original files and sha256,
``source_resolution``, ``resolution``, ``downsample_factor`` f, the pipeline, ``min_psnr_db``).

How the references were made and how :func:`golden_psnr` compares (the SAME pipeline on both sides):

1. generator output x in [-1, 1] -> ``u = clip(rint((x + 1) * 127.5), 0, 255)`` as uint8
   (``io.images.to_uint8``; the official PNGs hold such a uint8 image);
2. f x f area average of the uint8 image, rounded half up, exactly in integers:
   ``(block sum + f*f // 2) // (f*f)``; f = 1 leaves u unchanged;
3. PSNR = 10 log10(255^2 / MSE) over all pixels and channels of the two uint8 images (+inf if equal).

Downsizing ships 1/16 of the pixels of a 1024 image. It does not make a good port fail (per block the
squared mean error is at most the mean squared error, so a port within 35 dB at full resolution stays
within ~33.3 dB in the worst case and in practice gains); global errors (biases, scales, channel order,
wrong weights) pass through unattenuated; high-frequency ones (1-pixel shifts, upsampling artefacts) are
attenuated by up to 10 log10(f^2) dB. ``tests/data/golden/PROVENANCE.md`` has the measured table.
"""

from __future__ import annotations

import json
import os
import pathlib

import jax
import numpy as np
from PIL import Image

from pmsfc_jax.io import images
from pmsfc_jax.models import pggan

GOLDEN_JSON = 'golden.json'
MIN_PSNR_DB = 35.0


def box_downsize(u8: np.ndarray, factor: int) -> np.ndarray:
  """Exact f x f area average of uint8 (..., H, W, C) images, rounded half up, as uint8 (int64 sums)."""
  u8 = np.asarray(u8)
  if u8.dtype != np.uint8:
    raise TypeError(f'box_downsize expects uint8 images, got {u8.dtype}')
  if factor == 1:
    return u8.copy()
  *lead, h, w, c = u8.shape
  if h % factor or w % factor:
    raise ValueError(f'image size {h}x{w} is not a multiple of the downsizing factor {factor}')
  s = u8.reshape(*lead, h // factor, factor, w // factor, factor, c).astype(np.int64).sum(axis=(-4, -2))
  n = factor * factor
  return ((s + n // 2) // n).astype(np.uint8)


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
  """PSNR in dB of two uint8 images (peak 255); +inf when identical."""
  mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
  return float('inf') if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def load_meta(folder: str | os.PathLike) -> dict:
  path = pathlib.Path(os.fspath(folder)) / GOLDEN_JSON
  if not path.exists():
    raise FileNotFoundError(f'{folder} is not a golden folder: missing {path}')
  return json.loads(path.read_text())


def load_latents(folder: str | os.PathLike) -> np.ndarray:
  """(n, z_dim) float32 latents, row i for ``load_meta(folder)['names'][i]``."""
  meta = load_meta(folder)
  z = np.load(pathlib.Path(os.fspath(folder)) / meta['z_file'], allow_pickle=False)
  want = (len(meta['names']), meta['z_dim'])
  if z.shape != want or z.dtype != np.float32:
    raise ValueError(f'{folder}/{meta["z_file"]}: expected {want} float32, got {z.shape} {z.dtype}')
  return z


def load_references(folder: str | os.PathLike) -> np.ndarray:
  """(n, h, w, 3) uint8 reference images (as shipped, possibly downsized), in ``names`` order."""
  d = pathlib.Path(os.fspath(folder))
  out = []
  for entry in load_meta(d)['names']:
    with Image.open(d / entry['png']) as im:
      out.append(np.asarray(im.convert('RGB')))
  return np.stack(out)


def golden_psnr(generated, folder: str | os.PathLike, indices=None) -> np.ndarray:
  """PSNR (dB) per image of generated float images against the references of ``folder``.

  ``generated``: (n, H, W, 3) float in [-1, 1] at the generator's FULL resolution (``source_resolution``),
  row i made from latent ``indices[i]`` (default: all latents in order). They go through the pipeline
  of the module docstring; returns (n,) float64, +inf where the (downsized) uint8 images are identical.
  """
  meta = load_meta(folder)
  x = np.asarray(generated)
  res, f, total = int(meta['source_resolution']), int(meta['downsample_factor']), len(meta['names'])
  idx = np.arange(total) if indices is None else np.asarray(indices, np.int64).reshape(-1)
  if idx.size and (idx.min() < 0 or idx.max() >= total):
    raise ValueError(f'indices must lie in [0, {total}), got {idx.tolist()}')
  if x.shape != (idx.size, res, res, 3):
    raise ValueError(
      f'generated images must be ({idx.size}, {res}, {res}, 3) (full resolution, NHWC, in the order of '
      f'{GOLDEN_JSON} names / indices), got {x.shape}'
    )
  got = box_downsize(images.to_uint8(x), f)
  want = load_references(folder)[idx]
  return np.array([psnr_uint8(g, w) for g, w in zip(got, want)])


def check_generator(gen: pggan.Generator, folder: str | os.PathLike) -> dict[str, float]:
  """``{name: PSNR}`` of ``gen`` on every latent of a golden folder, one image at a time (jitted)."""
  meta = load_meta(folder)
  if (gen.config.resolution, gen.config.z_dim) != (meta['source_resolution'], meta['z_dim']):
    raise ValueError(
      f'{folder}: references of a {meta["source_resolution"]}x{meta["source_resolution"]} generator with '
      f'z {meta["z_dim"]}, got {gen.config.resolution}x{gen.config.resolution} with z {gen.config.z_dim}'
    )
  z = load_latents(folder)
  fn = jax.jit(lambda params, zi: pggan.generate(gen.config, params, zi))
  scores = {}
  for i, entry in enumerate(meta['names']):
    scores[entry['name']] = float(golden_psnr(np.asarray(fn(gen.params, z[i : i + 1])), folder, [i])[0])
  return scores
