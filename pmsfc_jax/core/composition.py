"""Feature composition of mGANprior (Eq. 1) and PmSFC (Eq. 6-7), as pure functions of one image's codes.

Codes of ONE image (vmap over images where they are called):

* mGANprior: ``codes`` (N, z_dim), ``weights`` alpha (N, C). Eq. 1 as the official mGANprior code computes
  it (``derivable_models/derivable_generator.py:PGGAN_multi_z``): ``f = sum_k G1(z_k) * alpha_k / N`` with
  alpha initialised to ``1/N`` (so the initial f is the mean of the N feature maps divided by N; the
  paper's Eq. 1 omits the ``1/N``; the PmSFC repository's copy of that class drops it too). Codes start
  from N(0, I) there whatever ``--init_type`` says.
* PmSFC: ``codes`` (R, K, z_dim), ``weights`` w (R, K, C), subspace masks m (R, C) in {0, 1}. Eq. 6:
  ``f^r = sum_k (m^r * G1(z_k^r)) * tanh(w_k^r) / sum_k tanh(w_k^r)``; Eq. 7: ``x_hat = G2(re-order(f^1..f^R))``
  which, for masks that partition the channels, is the sum over r of the masked maps. Both are one einsum
  over (R, K, C) coefficients; all R*K codes go through G1 as one batch.

Safe denominator. ``sum_k tanh(w_k^r)`` is a per-channel sum of values in (-1, 1) and can cross 0. We
(a) initialise ``w = arctanh(1 / max(K, 2))`` so that every tanh weight is equal (f^r starts as the mean of
the K masked maps) and the denominator starts at K / max(K, 2) ~ 1, and (b) guard the denominator with a
sign-preserving clamp of its magnitude, ``d -> sign(d) * max(|d|, eps)`` (sign(0) := +1), so that the
composed features are at most ``K / eps`` times the feature scale and never inf/NaN. Inside the clamp the
gradient w.r.t. the denominator is 0 (the numerator still moves the weights away). ``eps`` defaults to
1e-3 (``config.method.weight_eps``). This guard is a deviation from the paper, which does not discuss the
case. :func:`check_masks` validates subspace masks for every user (inversion, subspace folders, clustering).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from pmsfc_jax.core import config
from pmsfc_jax.models import pggan

Array = jax.Array

DEFAULT_WEIGHT_EPS = config.Method.weight_eps


# ------------------------------------------------------------------------------------------------
# Initial values.


def init_codes(rng: Array, shape: tuple[int, ...], init: str = 'normal', dtype=jnp.float32) -> Array:
  """Latent codes of ``shape`` (..., z_dim): N(0, I) (``'normal'``) or zeros (``'zeros'``).

  Zero init makes all codes that share initial weights receive identical gradients, so the K codes of a
  subspace (or the N codes of mGANprior) stay identical: a documented limitation of that option.
  """
  if init == 'normal':
    return jax.random.normal(rng, shape, dtype)
  if init == 'zeros':
    return jnp.zeros(shape, dtype)
  raise ValueError(f"unknown init {init!r}; expected 'normal' or 'zeros'")


def mganprior_init_weights(num_codes: int, channels: int, dtype=jnp.float32) -> Array:
  """alpha_k = 1/N for every code and channel (as the mGANprior code does)."""
  return jnp.full((num_codes, channels), 1.0 / num_codes, dtype)


def pmsfc_init_weights(num_subspaces: int, num_codes: int, channels: int, dtype=jnp.float32) -> Array:
  """w with ``tanh(w) = 1 / max(K, 2)`` for every (subspace, code, channel)."""
  w0 = float(np.arctanh(1.0 / max(num_codes, 2)))
  return jnp.full((num_subspaces, num_codes, channels), w0, dtype)


# ------------------------------------------------------------------------------------------------
# Composition.


def _g1_batch(gen: pggan.Generator, z: Array, layer: int) -> Array:
  """G1 of all codes (..., z_dim) in one batch -> (..., H, W, C)."""
  lead = z.shape[:-1]
  feats = gen.g1(z.reshape(-1, z.shape[-1]), layer)
  return feats.reshape(*lead, *feats.shape[1:])


def mganprior_features(
  gen: pggan.Generator, codes: Array, weights: Array, layer: int, dtype=jnp.float32
) -> Array:
  """Eq. 1 features ``sum_k G1(z_k) * alpha_k / N``: codes (N, z), weights (N, C) -> (H, W, C) float32.

  ``dtype``: G1's compute dtype (see :func:`pmsfc_features`)."""
  n = codes.shape[0]
  feats = _g1_batch(gen, codes.astype(dtype), layer)
  return jnp.einsum('khwc,kc->hwc', feats, weights.astype(dtype), preferred_element_type=jnp.float32) / n


def safe_denominator(d: Array, eps: float = DEFAULT_WEIGHT_EPS) -> Array:
  """Sign-preserving clamp of |d| to >= eps (sign(0) = +1)."""
  sign = jnp.where(d < 0, -1.0, 1.0).astype(d.dtype)
  return sign * jnp.maximum(jnp.abs(d), eps)


def pmsfc_coefficients(weights: Array, masks: Array, eps: float = DEFAULT_WEIGHT_EPS) -> Array:
  """Per-(subspace, code, channel) factors ``m^r_c tanh(w^r_kc) / sum_j tanh(w^r_jc)``: (R, K, C)."""
  t = jnp.tanh(weights)
  denom = safe_denominator(jnp.sum(t, axis=1, keepdims=True), eps)
  return t / denom * masks.astype(weights.dtype)[:, None, :]


def pmsfc_features(
  gen: pggan.Generator,
  codes: Array,
  weights: Array,
  masks: Array,
  layer: int,
  eps: float = DEFAULT_WEIGHT_EPS,
  per_subspace: bool = False,
  dtype=jnp.float32,
) -> Array:
  """Eq. 6-7 composed features ``re-order(f^1..f^R)`` = sum_r f^r for a partition: (H, W, C) float32.

  ``per_subspace=True``: Eq. 6's masked composed map of every subspace, f^r: (R, H, W, C) (zero outside
  m^r; their sum is the composition). ``dtype``: G1's compute dtype; the coefficients (tanh, the sum
  over K that may cancel near 0, the clamp) are computed in float32 and the einsum accumulates in
  float32 whatever ``dtype`` is.
  """
  feats = _g1_batch(gen, codes.astype(dtype), layer)  # (R, K, H, W, C)
  coef = pmsfc_coefficients(weights, masks, eps).astype(dtype)  # (R, K, C)
  spec = 'rkhwc,rkc->rhwc' if per_subspace else 'rkhwc,rkc->hwc'
  return jnp.einsum(spec, feats, coef, preferred_element_type=jnp.float32)


def compose(
  gen: pggan.Generator,
  codes: Array,
  weights: Array,
  masks: Optional[Array],
  layer: int,
  method: str,
  eps: float = DEFAULT_WEIGHT_EPS,
  dtype=jnp.float32,
) -> Array:
  """Composed layer-``layer`` features of one image for ``method`` in {'pmsfc', 'mganprior'} (float32;
  ``dtype``: G1's compute dtype)."""
  if method == 'mganprior':
    return mganprior_features(gen, codes, weights, layer, dtype)
  if method == 'pmsfc':
    if masks is None:
      raise ValueError("method 'pmsfc' needs subspace masks (R, C)")
    return pmsfc_features(gen, codes, weights, masks, layer, eps, dtype=dtype)
  raise ValueError(f"unknown method {method!r}; expected 'pmsfc' or 'mganprior'")


def decode(
  gen: pggan.Generator, features: Array, layer: int, dtype=jnp.float32, remat: bool = False
) -> Array:
  """G2 of one image's features (H, W, C) -> image (H', W', 3) float32, computed in ``dtype``
  (``remat``: ``jax.checkpoint`` per G2 block, see ``pggan.g2``)."""
  return gen.g2(features[None].astype(dtype), layer, remat)[0].astype(jnp.float32)


def check_masks(
  masks, channels: int | None = None, name: str = 'masks', require_partition: bool = True
) -> np.ndarray:
  """Validates subspace masks (R, C) (bool or 0/1) and returns them as a bool numpy array.

  ``re-order`` in Eq. 7 assumes the masks partition the C channels (every channel in exactly one
  subspace, none empty), which is what spectral clustering produces; anything else is refused unless
  ``require_partition=False`` (then overlapping channels are summed and uncovered channels are zero).
  """
  m = np.asarray(masks)
  if m.ndim != 2 or (channels is not None and m.shape[1] != channels):
    want = 'C' if channels is None else channels
    raise ValueError(
      f'{name}: subspace masks must have shape (R, {want}) for this generator layer, got {m.shape}'
    )
  if not np.all((m == 0) | (m == 1)):
    raise ValueError(f'{name}: subspace masks must be binary (bool or 0/1)')
  m = m.astype(bool)
  if require_partition:
    counts = m.sum(axis=0)
    if not np.all(counts == 1):
      c = int(np.flatnonzero(counts != 1)[0])
      raise ValueError(
        f'{name}: subspace masks must partition the {m.shape[1]} channels (each channel in exactly '
        f'one subspace); {int(np.sum(counts != 1))} channel(s) are in 0 or several subspaces '
        f'(channel {c} is in {int(counts[c])} subspaces)'
      )
    sizes = m.sum(axis=1)
    if np.any(sizes == 0):
      raise ValueError(f'{name}: subspace {int(np.flatnonzero(sizes == 0)[0])} is empty')
  return m
