"""Editing in the composed feature space of inverted images (paper Fig. 4 and Fig. 6).

* Subspace exchange (Fig. 4): image i keeps its composed layer-l features except the channels of subspace
  r, which come from image j; G2 decodes the result. In a grid over pairs the diagonal is the inversion
  itself. The official code exchanges ``f_a[mask] = f_b[mask]`` on generated features; here it is applied
  to the composed features ``re-order(f^1..f^R)`` of real, inverted images.
* Interpolation (Fig. 6): linear interpolation between two images' composed features,
  ``f(t) = (1 - t) f_a + t f_b``, decoded by G2. Works for both methods (the paper contrasts them).

All functions are pure; they take the codes/weights of an :class:`inversion.InversionResult` (or state),
the subspace masks (R, C) and the inversion config (for method / layer). :func:`exchange_features` is
also what the discovery pictures (``jobs/plots.py``) use on generated features.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from pmsfc_jax.core import composition
from pmsfc_jax.core import config
from pmsfc_jax.core import inversion
from pmsfc_jax.models import pggan

Array = jax.Array


def composed_features(
  gen: pggan.Generator, codes: Array, weights: Array, masks: Optional[Array], cfg: config.InvertConfigLike
) -> Array:
  """Composed layer features of a batch: (B, H, W, C) (Eq. 1 or Eq. 6-7 per ``cfg.method``)."""
  cfg = inversion.parse(cfg)
  m = inversion.subspace_masks(gen, masks, cfg)
  fn = lambda c, w: composition.compose(gen, c, w, m, cfg.model.layer, cfg.method.name, cfg.method.weight_eps)
  return jax.vmap(fn)(codes, weights)


def decode(gen: pggan.Generator, features: Array, layer: int) -> Array:
  """G2 of features (..., H, W, C) with any number of leading axes -> images (..., H', W', 3)."""
  lead = features.shape[:-3]
  out = gen.g2(features.reshape((-1,) + features.shape[-3:]), layer)
  return out.reshape(lead + out.shape[1:])


def exchange_features(features_a: Array, features_b: Array, channel_mask: Array) -> Array:
  """``f_a`` with the channels of ``channel_mask`` (C,) taken from ``f_b`` (broadcasting leading axes)."""
  m = jnp.asarray(channel_mask, features_a.dtype)
  return features_a * (1 - m) + features_b * m


def exchange_subspace(
  gen: pggan.Generator,
  result: inversion.InversionResult,
  masks: Array,
  cfg: config.InvertConfigLike,
  subspace: int,
  pairs: Optional[Array] = None,
) -> Array:
  """Fig. 4 on inverted images.

  Args:
    result: an InversionResult / InversionState (uses ``.codes`` and ``.weights``, batch B).
    masks: subspace masks (R, C) (also for mGANprior results: they only select the channels).
    subspace: r, the subspace whose features are exchanged.
    pairs: optional (P, 2) int array of (i, j): image i receives image j's subspace-r features. None gives
      the full B x B grid.
  Returns:
    (P, H, W, 3) images for ``pairs``, else (B, B, H, W, 3) with [i, j] = i's features, r from j (the
    diagonal equals the inverted images).
  """
  cfg = inversion.parse(cfg)
  channels = pggan.feature_shape(gen.config, cfg.model.layer)[-1]
  mk = jnp.asarray(composition.check_masks(masks, channels, require_partition=False), jnp.float32)
  if not 0 <= subspace < mk.shape[0]:
    raise ValueError(f'subspace must be in [0, {mk.shape[0]}), got {subspace}')
  f = composed_features(gen, result.codes, result.weights, masks, cfg)
  if pairs is None:
    mixed = exchange_features(f[:, None], f[None, :], mk[subspace])
  else:
    pairs = jnp.asarray(pairs, jnp.int32)
    mixed = exchange_features(f[pairs[:, 0]], f[pairs[:, 1]], mk[subspace])
  return decode(gen, mixed, cfg.model.layer)


def interpolate(
  gen: pggan.Generator,
  result: inversion.InversionResult,
  masks: Optional[Array],
  cfg: config.InvertConfigLike,
  i: int,
  j: int,
  num_frames: int = 8,
) -> Array:
  """Fig. 6: decode ``(1 - t) f_i + t f_j`` for ``t = linspace(0, 1, num_frames)``: (T, H, W, 3)."""
  cfg = inversion.parse(cfg)
  f = composed_features(gen, result.codes, result.weights, masks, cfg)
  return interpolate_features(gen, f[i], f[j], cfg.model.layer, num_frames)


def interpolate_features(
  gen: pggan.Generator, features_a: Array, features_b: Array, layer: int, num_frames: int = 8
) -> Array:
  """Decoded linear path between two feature maps (H, W, C): (T, H', W', 3)."""
  t = jnp.linspace(0.0, 1.0, num_frames, dtype=features_a.dtype)[:, None, None, None]
  return decode(gen, (1 - t) * features_a[None] + t * features_b[None], layer)
