"""Task degradations P of Eq. 9, target preparation and the delivered result of each task.

Eq. 9 of the paper optimises ``||x - P(x_hat)||^2`` where ``x`` is the degraded input the user has and
``P`` is the task's "post-processing" applied to the generator output. (The paper's Eq. 9 has no
perceptual term; by default the library adds Eq. 8's, as mGANprior's scripts do: a documented deviation,
``config.Loss.degraded_perceptual`` and ``objective.py``.)

* ``reconstruct``: ``P = identity``; delivered = the raw estimate.
* ``colorize``: ``P = grayscale`` with the ITU-R BT.601 luminance ``Y = 0.299 R + 0.587 G + 0.114 B``
  replicated to three channels (mGANprior ``utils/manipulate.py:Color_loss`` does exactly this, expanding
  the gray map to 3 channels before its VGG). The delivered colour image keeps the input's luminance and
  takes the estimate's chroma, as mGANprior's ``colorization.py`` does with PIL's ``YCbCr`` (JPEG / full
  range BT.601: ``Cb = 0.5 B - 0.168736 R - 0.331264 G``, ``Cr = 0.5 R - 0.418688 G - 0.081312 B``, plus
  128). Here the conversion is done in float on [-1, 1] images: because the luma coefficients sum to 1 and
  the chroma coefficients sum to 0, the affine offsets cancel and the same matrices apply to [-1, 1] data
  with zero-centred chroma. Unlike mGANprior (which round-trips through uint8 and therefore clips), the
  delivered image is not clipped, so its luminance equals the input's exactly (up to float rounding);
  values may leave [-1, 1] slightly and are clipped at the I/O edge (``io.images.save_image``).
* ``super_resolve``: ``P = downsample by factor``. ``'bilinear'`` reproduces PyTorch
  ``F.interpolate(x, scale_factor=1/f, mode='bilinear', align_corners=False)`` (no anti-aliasing), the
  mGANprior default (``SR_loss``); ``'area'`` is exact f x f average pooling (anti-aliased, PyTorch
  ``mode='area'``). The input ``x`` is the low-resolution image (generator resolution / factor).
  Delivered = the raw full-resolution estimate.
* ``inpaint``: ``P = multiplication by the known-pixel mask`` k (1 = known, 0 = hole, soft values in
  between); the input is ``x = k * image``. The pixel term averages over known pixels (or over all
  pixels, mGANprior's: ``config.Loss.pixel_mean``; see ``objective.py``). Mask PNGs follow mGANprior:
  **white (1) marks the hole** (``masked_loss`` uses ``x * (1 - mask)``, ``utils/manipulate.py:66-71``);
  ``io.masks.load_inpainting_mask`` converts such a PNG into a known-pixel mask (one mask for the three
  channels: the RGB mean; mGANprior keeps a per-channel mask, ``manipulate.py:61-63``, which differs
  only for coloured masks). Without a PNG, ``launch.reproduce`` uses :func:`center_hole_mask`.
  Delivered = ``x + (1 - k) * x_hat``: the input on known pixels and the estimate inside the hole
  (mGANprior's unused ``combine_inpainting``, ``manipulate.py:55-58``: ``gt * k + out * (1 - k)``; its
  scripts save the raw estimate, which is ``InversionResult.images``).

All functions take NHWC float images in [-1, 1] and are pure jnp (jit/vmap friendly) unless noted.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from pmsfc_jax.core import config

Array = jax.Array

TASKS = config.TASKS
DOWNSAMPLE_METHODS = config.DOWNSAMPLE_METHODS

LUMA = (0.299, 0.587, 0.114)
# Rows: Y, Cb, Cr (JPEG / PIL full-range BT.601, without the +128 offsets: see the module docstring).
_RGB_TO_YCBCR = np.array(
  [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float64
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)


def check_task(task: str) -> str:
  if task not in TASKS:
    raise ValueError(f'unknown task {task!r}; expected one of {", ".join(TASKS)}')
  return task


# ------------------------------------------------------------------------------------------------
# Colour.


def luminance(images: Array) -> Array:
  """BT.601 luma ``0.299 R + 0.587 G + 0.114 B``: (..., 3) -> (..., 1)."""
  w = jnp.asarray(LUMA, images.dtype)
  return jnp.sum(images * w, axis=-1, keepdims=True)


def grayscale(images: Array) -> Array:
  """``P`` of colorization: luma replicated to 3 channels (mGANprior ``Color_loss``). Idempotent."""
  return jnp.broadcast_to(luminance(images), images.shape)


def rgb_to_ycbcr(images: Array) -> Array:
  """RGB -> (Y, Cb, Cr) for [-1, 1] data with zero-centred chroma (PIL's matrix, no offsets)."""
  m = jnp.asarray(_RGB_TO_YCBCR, images.dtype)
  return jnp.einsum('...c,dc->...d', images, m, precision=jax.lax.Precision.HIGHEST)


def ycbcr_to_rgb(ycbcr: Array) -> Array:
  m = jnp.asarray(_YCBCR_TO_RGB, ycbcr.dtype)
  return jnp.einsum('...c,dc->...d', ycbcr, m, precision=jax.lax.Precision.HIGHEST)


def merge_luminance(estimate: Array, gray_input: Array) -> Array:
  """Colorization result: luminance of ``gray_input`` (3-channel gray or colour) + chroma of ``estimate``."""
  y = luminance(gray_input) if gray_input.shape[-1] == 3 else gray_input
  cbcr = rgb_to_ycbcr(estimate)[..., 1:]
  return ycbcr_to_rgb(jnp.concatenate([y, cbcr], axis=-1))


# ------------------------------------------------------------------------------------------------
# Resolution.


def downsample(images: Array, factor: int, method: str = 'bilinear') -> Array:
  """Downsample NHWC ``images`` by an integer ``factor`` (``P`` of super-resolution).

  ``'bilinear'``: PyTorch ``F.interpolate(scale_factor=1/f, mode='bilinear', align_corners=False)``:
  output pixel i samples the input at ``(i + 0.5) f - 0.5`` with 2-tap linear weights (no anti-aliasing;
  for even f this is the mean of the 2x2 pixels around each block centre). ``'area'``: f x f mean pooling.
  """
  if method not in DOWNSAMPLE_METHODS:
    raise ValueError(f'unknown downsample method {method!r}; expected one of {", ".join(DOWNSAMPLE_METHODS)}')
  factor = int(factor)
  if factor < 1:
    raise ValueError(f'downsample factor must be >= 1, got {factor}')
  if factor == 1:
    return images
  *lead, h, w, c = images.shape
  if h % factor or w % factor:
    raise ValueError(f'image size {h}x{w} is not divisible by the downsample factor {factor}')
  if method == 'area':
    x = images.reshape(*lead, h // factor, factor, w // factor, factor, c)
    return jnp.mean(x, axis=(-4, -2))
  return _bilinear_axis(_bilinear_axis(images, factor, axis=-3), factor, axis=-2)


def _bilinear_axis(x: Array, factor: int, axis: int) -> Array:
  n = x.shape[axis]
  out = n // factor
  src = (np.arange(out) + 0.5) * factor - 0.5
  src = np.clip(src, 0, n - 1)
  lo = np.floor(src).astype(np.int32)
  hi = np.minimum(lo + 1, n - 1)
  frac = (src - lo).astype(np.float32)
  shape = [1] * x.ndim
  shape[axis] = out
  frac = jnp.asarray(frac, x.dtype).reshape(shape)
  return jnp.take(x, lo, axis=axis) * (1 - frac) + jnp.take(x, hi, axis=axis) * frac


# ------------------------------------------------------------------------------------------------
# Inpainting.


def apply_known_mask(images: Array, known: Array) -> Array:
  """``P`` of inpainting: ``k * images`` (holes zeroed). ``known`` broadcasts against ``images``."""
  return images * known.astype(images.dtype)


def center_hole_mask(size: int, hole: float = 0.5) -> np.ndarray:
  """The known-pixel mask (size, size, 1) float32 of a centred square hole ``hole * size`` wide.

  Generated, not shipped (mGANprior's example masks carry no licence): the default inpainting mask of
  ``launch.reproduce``. ``hole=0.5`` covers the central quarter of the image (on the aligned CelebA
  faces: eyes, nose and mouth), about the area of mGANprior's ``mask-2.png`` (25%)."""
  size = int(size)
  if size < 2 or not 0 < hole < 1:
    raise ValueError(f'center_hole_mask needs size >= 2 and 0 < hole < 1, got size={size}, hole={hole}')
  side = max(1, int(round(size * hole)))
  lo = (size - side) // 2
  known = np.ones((size, size, 1), np.float32)
  known[lo : lo + side, lo : lo + side] = 0.0
  return known


# ------------------------------------------------------------------------------------------------
# Task-level helpers used by inversion.py and the batch job.


def degrade(
  images: Array, task: str, *, factor: int = 1, method: str = 'bilinear', known: Optional[Array] = None
) -> Array:
  """``P(images)`` for ``task`` (NHWC in [-1, 1]); ``known`` is the (B,H,W,1) known-pixel mask."""
  check_task(task)
  if task == 'reconstruct':
    return images
  if task == 'colorize':
    return grayscale(images)
  if task == 'super_resolve':
    return downsample(images, factor, method)
  if known is None:
    raise ValueError("task 'inpaint' needs the known-pixel mask (aux)")
  return apply_known_mask(images, known)


def prepare_target(image_full_res: Array, task: config.Task, known: Optional[Array] = None) -> Array:
  """Turn full-resolution input images (NHWC or HWC) into the ``x`` the task's objective compares with.

  reconstruct: unchanged; colorize: 3-channel grayscale; super_resolve: downsampled by ``task.factor``
  with ``task.downsample``; inpaint: holes zeroed with ``known`` (required).
  Use it to make test inputs from ground-truth images or when a job receives undegraded images.
  """
  x = jnp.asarray(image_full_res, jnp.float32)
  return degrade(
    x,
    task.name,
    factor=task.factor,
    method=task.downsample,
    known=None if known is None else jnp.asarray(known, jnp.float32),
  )


def deliver(estimate: Array, target: Array, task: str, known: Optional[Array] = None) -> Array:
  """The task's result from the raw estimate (see the module docstring)."""
  check_task(task)
  if task == 'colorize':
    return merge_luminance(estimate, target)
  if task == 'inpaint':
    if known is None:
      raise ValueError("task 'inpaint' needs the known-pixel mask (aux)")
    k = known.astype(estimate.dtype)
    return jnp.where(k > 0, target, 0.0) + estimate * (1 - k)
  return estimate
