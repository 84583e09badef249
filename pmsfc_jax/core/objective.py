"""The objective of GAN inversion: Eq. 2 / 8 (pixel + perceptual terms) and Eq. 9 (the task's P) as one
public function of one image, :func:`objective`, which ``inversion.py`` differentiates.

Eq. 9 of one image, with the task's degradation P (``degradations.py``)::

    L = pixel_weight * mean((x - P(x_hat))^2) [+ perceptual_weight * 0.001 * mean|V(x) - V(P(x_hat))|]

where x is the degraded input (``degradations.prepare_target``: gray, low-resolution, or ``k * image``
for inpainting with the known-pixel mask k) and ``x_hat = G2(compose(codes, weights))`` (Eq. 1 or 6-7).

* **Eq. 9 as the paper writes it** is the pixel term alone, ``||x - P(x_hat)||_2^2``; the perceptual
  term belongs to Eq. 8 (reconstruction, P = identity). The library DEFAULT keeps the perceptual term
  on the degraded tasks too (``config.Loss.degraded_perceptual=True``), as mGANprior's scripts do: a
  documented DEVIATION from Eq. 9, kept so that earlier results do not move; ``presets.invert('paper')``
  / ``'eq9'`` switch it off, and the README's reproduction table measures the difference.
* **Inpainting** compares ``x = k * image`` with ``k * x_hat``: the pixel term is
  ``sum(k^2 (image - x_hat)^2) / divisor``, exactly mGANprior's ``masked_loss`` (``utils/manipulate.py:
  66-71``: both images multiplied by ``1 - mask`` inside the loss, so soft weights enter as k^2), with
  ``loss.pixel_mean`` choosing the divisor: ``'known'`` (default) ``3 * sum(k^2)`` (the mean over known
  pixels), ``'all'`` ``3 * H * W`` (mGANprior's ``nn.MSELoss``, ``inversion/losses.py:25``; the
  ``mganprior`` preset). The target is not multiplied by k again (it already is ``k * image``; holes are
  zeroed, which is idempotent), so soft masks are weighted by k^2, not k^3. V sees ``k * x_hat`` and
  ``x`` (mGANprior: ``V(k x_hat)`` vs ``V(k x)``).
* **Colorization** passes the target through P as well (a no-op for gray inputs, since P is idempotent),
  so colour inputs are accepted too (:func:`objective_target`).

Eq. 2 / 8 follow mGANprior's ``CombinationLoss`` (``inversion/losses.py:33-40, 77-103``):
``L(x, x_hat) = ||x - x_hat||_2^2 + lambda_vgg * ||V(x) - V(x_hat)||_1`` with V the ImageNet VGG16 cut at
relu3_3, with its reductions and constants:

* pixel term: ``nn.MSELoss()``, i.e. the *mean* of the squared difference over pixels and channels of
  images in [-1, 1] (``l2_lambda = 1``);
* perceptual term: ``F.l1_loss(V(x), V(x_hat), reduction='mean') * 0.001`` (``vgg_loss_type='L1'``,
  ``vgg_lambda = 1``), V = ``vgg16(pretrained=True).features[:16]`` (relu3_3) on ImageNet-normalised
  inputs resized with *nearest* interpolation to 256x256. The paper's Eq. 2 writes an L1 norm too, so
  we implement the L1 *mean* of the absolute feature difference, scaled by ``feature_scale = 0.001``;
  ``PerceptualConfig(feature_loss='l2')`` gives mGANprior's ``vgg_loss_type='L2'`` variant (mean of
  squared differences).

**The official PmSFC code does not use this loss.** Its inversion script ``PmSFC.py``
(guanyuelee/PmSFC at f26cbb4) imports no loss module (imports at ``PmSFC.py:3-22``; the repository's
copy of mGANprior's ``inversion/losses.py`` has no importer) and optimises
``0.01 * MSE(G2(sum_r m_r * G1(z_r) + G1(z_base)), x) + MSE(G2(G1(z_base)), x)`` (``PmSFC.py:175-191``):
an extra base code whose features are added unmasked, one code per subspace (``--code_per_cluster``
default 1, ``PmSFC.py:277-278``), no weights at all (no tanh weights of Eq. 6), no VGG term, codes
initialised to exactly zero (``--init_type`` default ``'Zeros'``, ``PmSFC.py:155-160, 261``), Adam lr 1e-4
(``PmSFC.py:259, 263``) for 50000 iterations by default (``PmSFC.py:267``; 20000 in its README, 7000 in
the paper). It cannot run as published: it reads ``args.cluster_numbers`` (``PmSFC.py:97``, also 102,
105, 130, ...), which its argparse block (``PmSFC.py:239-287``) never defines (``parse_known_args``
swallows a ``--cluster_numbers`` flag), so it stops with ``AttributeError`` right after clustering. This
module therefore implements the paper's Eq. 6-9 with mGANprior's loss constants, not ``PmSFC.py``.

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


def pixel_loss(
  target: Array, estimate: Array, pixel_mask: Optional[Array] = None, mean: str = 'known'
) -> Array:
  """Per-image mean squared error; with ``pixel_mask`` k (B, H, W, 1), the inpainting pixel term.

  With a mask the images are compared as given (the caller applies P: both are ``k * image``, as in
  mGANprior's ``masked_loss``), holes (k = 0) contribute nothing, and ``mean`` picks the divisor:
  ``'known'``: ``C * sum(k^2)`` (binary masks: the number of known pixels), ``'all'``: ``C * H * W``
  (mGANprior). A mask that is 0 everywhere gives 0 for that image (not NaN).
  """
  sq = jnp.square(target - estimate)
  if pixel_mask is None:
    return jnp.mean(sq, axis=(1, 2, 3))
  config.check(mean in config.PIXEL_MEANS, f'pixel mean must be one of {config.PIXEL_MEANS}, got {mean!r}')
  k = jnp.broadcast_to(pixel_mask.astype(sq.dtype), sq.shape[:3] + (1,))
  num = jnp.sum(jnp.where(k > 0, sq, 0.0), axis=(1, 2, 3))
  if mean == 'all':
    return num / (sq.shape[1] * sq.shape[2] * sq.shape[3])
  den = jnp.sum(jnp.square(k), axis=(1, 2, 3)) * sq.shape[-1]
  return num / jnp.maximum(den, 1e-8)


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
  pixel_mean: str = 'known',
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
    pixel_mask: optional (B, H, W, 1) known-pixel weights k in [0, 1] (:func:`pixel_loss`; binary: the
      pixel term averages where it is 1). Neither term masks the images: the caller passes
      ``k * image`` where a task needs it (Eq. 9, :func:`objective`).
    pixel_mean: ``'known'`` | ``'all'``, the divisor of the masked pixel term (:func:`pixel_loss`).
    dtype: VGG's compute dtype (the loss itself is float32).

  Returns:
    (B,) losses, one per image (independent of the rest of the batch).
  """
  loss = pixel_weight * pixel_loss(target, estimate, pixel_mask, pixel_mean)
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
  """Whether the objective of ``cfg`` has the perceptual term (Eq. 8; Eq. 9 only with the default
  deviation ``loss.degraded_perceptual``)."""
  if cfg.loss.perceptual_weight == 0:
    return False
  return cfg.task.name == 'reconstruct' or cfg.loss.degraded_perceptual


def compute_dtype(cfg: config.InvertConfig) -> jnp.dtype:
  """The activations' dtype of G1, G2 and VGG (``model.compute_dtype``).

  Mixed precision: params, codes, weights, the optimizer state and every loss stay float32. The
  composition coefficients are float32 (their sum over K can cancel near 0) and the composition
  einsum accumulates in float32; images and VGG features are cast back to float32 before the losses.
  Codes must stay float32: Adam steps of lr 1e-4 vanish on bf16 values near 1 (1 + 1e-4 == 1 in bf16).
  """
  return jnp.dtype(cfg.model.compute_dtype)


def objective_target(targets: Array, known: Optional[Array], task: str) -> Array:
  """x of Eq. 9 (P applied again where it is idempotent: gray for colorize, holes zeroed for inpaint).

  For inpainting the target is already ``k * image`` (``degradations.prepare_target``); it is not
  multiplied by k again (that would weight soft masks by k^3), only its holes (k = 0) are zeroed."""
  if task == 'colorize':
    return degradations.grayscale(targets)
  if task == 'inpaint':
    return jnp.where(known > 0, targets, 0.0)
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
    pixel_mean=cfg.loss.pixel_mean,
  )[0]
