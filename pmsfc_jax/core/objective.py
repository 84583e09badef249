"""The objective of GAN inversion: Eq. 2 / 8 (pixel + perceptual terms) and Eq. 9 (the task's P) as one
public function of one image, :func:`objective`, which ``inversion.py`` differentiates.

Eq. 9 of one image, with the task's degradation P (``degradations.py``)::

    L = pixel_weight * mean((x - P(x_hat))^2) + perceptual_weight * 0.001 * mean|V(x) - V(P(x_hat))|

where x is the (already degraded) input target and ``x_hat = G2(compose(codes, weights))`` (Eq. 1 or
6-7). For inpainting the pixel mean runs over known pixels only and both images are masked before V. For
colorization the target is passed through P as well (a no-op for gray inputs, since P is idempotent), so
colour inputs are accepted too (:func:`objective_target`).

Eq. 2 / 8 (mGANprior's ``CombinationLoss``):
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

from pmsfc_jax.core import composition
from pmsfc_jax.core import config
from pmsfc_jax.core import degradations
from pmsfc_jax.models import pggan
from pmsfc_jax.models import vgg

Array = jax.Array
PerceptualConfig = config.PerceptualConfig


@dataclasses.dataclass
class Perceptual:
  """The feature extractor V with its weights: ``config`` static, ``params`` pytree leaves
  (``io.pretrained.load_perceptual`` loads the ImageNet VGG16 ones)."""

  config: PerceptualConfig
  params: dict

  def __call__(self, images: Array) -> Array:
    return perceptual_features(self, images)


jax.tree_util.register_dataclass(Perceptual, data_fields=['params'], meta_fields=['config'])


def perceptual_features(percep: Perceptual, images: Array, dtype=jnp.float32) -> Array:
  """V(images): (B, H, W, 3) in [-1, 1] -> (B, h, w, c) float32 VGG16 features at
  ``percep.config.layer``, the convolutions computed in ``dtype``."""
  cfg = percep.config
  return vgg.features(percep.params, images, cfg.layer, cfg.resize, cfg.resize_method, dtype)


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


def reconstruction_loss(
  percep: Optional[Perceptual],
  target: Array,
  estimate: Array,
  target_features: Optional[Array] = None,
  pixel_weight: Union[float, Array] = 1.0,
  perceptual_weight: Union[float, Array] = 1.0,
  pixel_mask: Optional[Array] = None,
  dtype=jnp.float32,
) -> Array:
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
    dtype: VGG's compute dtype (the loss itself is float32).

  Returns:
    (B,) losses, one per image (independent of the rest of the batch).
  """
  loss = pixel_weight * pixel_loss(target, estimate, pixel_mask)
  if _is_static_zero(perceptual_weight):
    return loss
  if percep is None:
    raise ValueError('reconstruction_loss: percep is None but perceptual_weight is not 0')
  if target_features is None:
    target_features = perceptual_features(percep, target, dtype)
  est_features = perceptual_features(percep, estimate, dtype)
  return loss + perceptual_weight * feature_loss(percep, target_features, est_features)


# ------------------------------------------------------------------------------------------------
# Eq. 9 of one image.


def uses_perceptual(cfg: config.InvertConfig) -> bool:
  return cfg.loss.perceptual_weight != 0


def compute_dtype(cfg: config.InvertConfig) -> jnp.dtype:
  """The activations' dtype of G1, G2 and VGG (``model.compute_dtype``).

  Mixed precision: params, codes, weights, the optimizer state and every loss stay float32. The
  composition coefficients are float32 (their sum over K can cancel near 0) and the composition
  einsum accumulates in float32; images and VGG features are cast back to float32 before the losses.
  Codes must stay float32: Adam steps of lr 1e-4 vanish on bf16 values near 1 (1 + 1e-4 == 1 in bf16).
  """
  return jnp.dtype(cfg.model.compute_dtype)


def objective_target(targets: Array, known: Optional[Array], task: str) -> Array:
  """x of Eq. 9 (P applied again where it is idempotent: gray for colorize, holes zeroed for inpaint)."""
  if task == 'colorize':
    return degradations.grayscale(targets)
  if task == 'inpaint':
    return degradations.apply_known_mask(targets, known)
  return targets


def estimate(
  gen: pggan.Generator, codes: Array, weights: Array, masks: Optional[Array], cfg: config.InvertConfig
) -> Array:
  """x_hat = G2(compose(codes, weights)) of ONE image (H, W, 3) float32 (Eq. 1 or Eq. 6-7 per
  ``cfg.method``), computed in ``model.compute_dtype``, G2 rematerialised with ``job.remat``."""
  dtype = compute_dtype(cfg)
  feats = composition.compose(
    gen, codes, weights, masks, cfg.model.layer, cfg.method.name, cfg.method.weight_eps, dtype
  )
  return composition.decode(gen, feats, cfg.model.layer, dtype, cfg.job.remat)


def objective(
  params: dict,
  gen: pggan.Generator,
  percep: Optional[Perceptual],
  masks: Optional[Array],
  target: Array,
  cfg: config.InvertConfig,
  target_features: Optional[Array] = None,
  known: Optional[Array] = None,
) -> Array:
  """Eq. 9 (Eq. 8 for reconstruction) of ONE image: a scalar, differentiable in ``params``.

  Args:
    params: ``{'codes': (R, K, z) | (N, z), 'weights': (R, K, C) | (N, C)}`` of the image.
    gen, percep: the generator and the perceptual network V (None when ``loss.perceptual_weight`` is 0).
    masks: subspace masks (R, C) float (pmsfc) or None (mganprior).
    target: x, the degraded input (h, w, 3) in [-1, 1] (:func:`objective_target` of what the user has).
    cfg: the inversion config (method, layer, loss weights, task).
    target_features: V(x) (h', w', c), computed once outside the gradient; computed here when None.
    known: (H, W, 1) known-pixel mask (inpainting), else None.
  """
  x_hat = estimate(gen, params['codes'], params['weights'], masks, cfg)[None]
  k = None if known is None else known[None]
  task = cfg.task
  est = degradations.degrade(x_hat, task.name, factor=task.factor, method=task.downsample, known=k)
  return reconstruction_loss(
    percep if uses_perceptual(cfg) else None,
    target[None],
    est,
    target_features=None if target_features is None else target_features[None],
    pixel_weight=cfg.loss.pixel_weight,
    perceptual_weight=cfg.loss.perceptual_weight if uses_perceptual(cfg) else 0,
    pixel_mask=k if task.name == 'inpaint' else None,
    dtype=compute_dtype(cfg),
  )[0]
