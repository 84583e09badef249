"""Image-quality metrics of the paper's tables: PSNR, SSIM, LPIPS, colorization AuC (Table 2), NIQE (Table 3,
``niqe.py``).

Convention: every metric takes NHWC float images in **[0, 1]** (``(B, H, W, 3)``, a single ``(H, W, 3)``
image is also accepted) and returns one value per image, ``(B,)``. Images from the library (generator
outputs, ``io.images.load_image``) are in [-1, 1]: convert them with ``to_unit(x) = clip((x + 1) / 2)``,
or use ``compute(..., signed=True)``. PSNR, SSIM, LPIPS and AuC are pure jnp functions (jit / vmap /
shard them); NIQE is NumPy (MATLAB semantics, not differentiable).

* PSNR / SSIM: dm-pix, data range 1, SSIM on RGB with an 11x11 Gaussian window (sigma 1.5), K1 0.01,
  K2 0.03, averaged over channels (scikit-image ``structural_similarity(channel_axis=-1, data_range=1,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` gives the same number). Images smaller
  than the 11-pixel window (tiny generators, super-resolution inputs) shrink the window to their size.
* LPIPS v0.1 (``models/lpips.py``), 'vgg' or 'alex'.
* Colorization AuC (Zhang et al., ECCV 2016): per-pixel Euclidean distance in the CIELAB ab plane
  (sRGB, D65), the fraction of pixels within t for t = 0, 1, ..., 150, and the area under that curve
  (trapezoid rule) divided by 150, so a perfect colorization scores 100 (%).
* NIQE (Mittal et al., IEEE SPL 2013), see ``niqe.py``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence, Union

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from pmsfc_jax.evaluation import niqe as niqe_lib
from pmsfc_jax.io import pretrained
from pmsfc_jax.models import lpips as lpips_model

Array = jax.Array

METRICS = ('psnr', 'ssim', 'lpips_vgg', 'lpips_alex', 'auc', 'niqe')
HIGHER_IS_BETTER = {
  'psnr': True,
  'ssim': True,
  'lpips_vgg': False,
  'lpips_alex': False,
  'auc': True,
  'niqe': False,
}


def to_unit(x: Array) -> Array:
  """[-1, 1] images (library convention) -> [0, 1], clipped."""
  return jnp.clip((x + 1.0) * 0.5, 0.0, 1.0)


def _batch(x) -> Array:
  x = jnp.asarray(x, jnp.float32)
  if x.ndim == 3:
    x = x[None]
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f'expected (B, H, W, 3) or (H, W, 3) images, got shape {x.shape}')
  return x


def _pair(a, b) -> tuple[Array, Array]:
  a, b = _batch(a), _batch(b)
  if a.shape != b.shape:
    raise ValueError(f'image shapes differ: {a.shape} vs {b.shape}')
  return a, b


def psnr(a: Array, b: Array) -> Array:
  """Peak signal-to-noise ratio in dB for images in [0, 1]; (B,). Identical images give +inf."""
  a, b = _pair(a, b)
  return dm_pix.psnr(a, b)


def ssim(a: Array, b: Array) -> Array:
  """Structural similarity on RGB (Wang et al. 2004, Gaussian window 11 / 1.5), images in [0, 1]; (B,).

  Images smaller than 11 pixels use the window shrunk to the image size."""
  a, b = _pair(a, b)
  if min(a.shape[1], a.shape[2]) < 11:
    return dm_pix.ssim(a, b, max_val=1.0, filter_size=min(a.shape[1], a.shape[2]), filter_sigma=1.5)
  return dm_pix.ssim(a, b, max_val=1.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03)


@functools.lru_cache(maxsize=None)
def _lpips_params(net: str):
  return pretrained.load_lpips_params(net)


@dataclasses.dataclass
class LpipsModel:
  """An LPIPS network with its weights (``net`` static, ``params`` pytree leaves): pass to ``lpips``."""

  net: str
  params: dict


jax.tree_util.register_dataclass(LpipsModel, data_fields=['params'], meta_fields=['net'])


def load_lpips(net: str = 'vgg') -> LpipsModel:
  """LPIPS v0.1 'vgg' or 'alex' with the shipped weights (read once per process)."""
  net = lpips_model.check_net(net)
  return LpipsModel(net, _lpips_params(net))


def lpips(a: Array, b: Array, net: Union[str, LpipsModel] = 'vgg', params: Optional[dict] = None) -> Array:
  """LPIPS v0.1 distance for images in [0, 1] (mapped to the network's [-1, 1]); (B,).

  ``net``: 'vgg', 'alex' or an ``LpipsModel`` from ``load_lpips`` (jit-friendly: its params are
  leaves). ``params`` defaults to the shipped weights of ``net`` (loaded once).
  """
  if isinstance(net, LpipsModel):
    net, params = net.net, net.params
  net = lpips_model.check_net(net)
  a, b = _pair(a, b)
  if params is None:
    params = _lpips_params(net)
  return _lpips_distance(params, a * 2.0 - 1.0, b * 2.0 - 1.0, net)


_lpips_distance = jax.jit(lpips_model.lpips_distance, static_argnums=3)


# ----------------------------------------------------------------------------------------------------
# CIELAB and colorization AuC.

# sRGB (D65) -> XYZ, IEC 61966-2-1 primaries; D65 2-degree white point as scikit-image uses.
_RGB_TO_XYZ = np.array(
  [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]], np.float32
)
_D65 = np.array([0.95047, 1.0, 1.08883], np.float32)


def rgb_to_lab(rgb: Array) -> Array:
  """sRGB in [0, 1] (..., 3) -> CIELAB (L in [0, 100], a, b) under D65."""
  rgb = jnp.asarray(rgb, jnp.float32)
  lin = jnp.where(
    rgb > 0.04045, jnp.power(jnp.maximum(rgb, 0.04045) * (1 / 1.055) + 0.055 / 1.055, 2.4), rgb / 12.92
  )
  xyz = lin @ jnp.asarray(_RGB_TO_XYZ.T) / jnp.asarray(_D65)
  eps = (6.0 / 29.0) ** 3
  f = jnp.where(
    xyz > eps, jnp.cbrt(jnp.maximum(xyz, eps)), xyz * (1.0 / (3 * (6.0 / 29.0) ** 2)) + 4.0 / 29.0
  )
  fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
  return jnp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def colorization_auc(
  reference: Array, candidate: Array, max_threshold: float = 150.0, num_thresholds: int = 151
) -> Array:
  """Zhang et al. 2016 AuC, in percent (0..100), for RGB images in [0, 1]; (B,).

  Per pixel ``d = ||ab_ref - ab_cand||_2``; ``acc(t) = mean_pixels [d <= t]`` at t = 0, 1, ..., 150;
  AuC = trapezoid area of ``acc`` over [0, 150] divided by 150.
  """
  reference, candidate = _pair(reference, candidate)
  ab_r = rgb_to_lab(reference)[..., 1:]
  ab_c = rgb_to_lab(candidate)[..., 1:]
  d = jnp.sqrt(jnp.sum(jnp.square(ab_r - ab_c), axis=-1)).reshape(reference.shape[0], -1)
  t = jnp.linspace(0.0, max_threshold, num_thresholds)
  acc = jnp.mean((d[:, None, :] <= t[None, :, None]).astype(jnp.float32), axis=-1)  # (B, T)
  area = jnp.sum((acc[:, 1:] + acc[:, :-1]) * 0.5 * jnp.diff(t)[None], axis=-1)
  return 100.0 * area / max_threshold


# ----------------------------------------------------------------------------------------------------


_psnr_jit = jax.jit(psnr)
_ssim_jit = jax.jit(ssim)
_auc_jit = jax.jit(colorization_auc)


def compute(
  names: Sequence[str],
  reference: Optional[Array],
  candidate: Array,
  signed: bool = False,
  niqe_model: Union[niqe_lib.NiqeModel, str, None] = None,
) -> dict[str, np.ndarray]:
  """Several metrics at once: ``{name: (B,) values}``; ``signed=True`` for [-1, 1] inputs."""
  unknown = [n for n in names if n not in METRICS]
  if unknown:
    raise ValueError(f'unknown metric(s) {unknown}; choose from {", ".join(METRICS)}')
  conv = to_unit if signed else (lambda x: jnp.asarray(x, jnp.float32))
  cand = _batch(conv(candidate))
  ref = None if reference is None else _batch(conv(reference))
  out = {}
  for n in names:
    if n == 'niqe':
      out[n] = niqe_lib.niqe(np.asarray(cand), niqe_model)
      continue
    if ref is None:
      raise ValueError(f'metric {n} needs a reference image')
    fn = {
      'psnr': _psnr_jit,
      'ssim': _ssim_jit,
      'auc': _auc_jit,
      'lpips_vgg': functools.partial(lpips, net='vgg'),
      'lpips_alex': functools.partial(lpips, net='alex'),
    }[n]
    out[n] = np.asarray(fn(ref, cand))
  return out
