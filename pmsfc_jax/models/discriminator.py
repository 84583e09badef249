"""PGGAN discriminator (Karras et al., ICLR 2018, ``networks.py:D_paper``, fully grown) in Flax.

Used only to train the small demo generator (issue #7); PmSFC itself never needs a discriminator.

Architecture (official, ``lod = 0``, no labels), all layers with the equalized learning rate (weights stored
N(0, 1), scaled at call time by gain / sqrt(fan_in), gain sqrt(2) except the last dense with gain 1), bias
after scaling, LeakyReLU 0.2:

* ``FromRGB``: 1x1 conv to nf(R) at the full resolution R;
* for every resolution r = R .. 8: ``Conv0`` 3x3 -> nf(r), ``Conv1`` 3x3 -> nf(r / 2), then a 2x2
  average pool after the activation (TF ``downscale2d``, non-fused variant);
* 4x4: minibatch standard deviation (group size 4, one feature), ``Conv`` 3x3 -> nf(4), ``Dense0`` ->
  nf(2), ``Dense1`` -> 1 (gain 1, linear): the logit.

``nf(r) = min(fmaps_base // r, fmaps_max)`` as in the generator, so a discriminator built from a
``GeneratorConfig`` mirrors its generator's widths. Inputs NHWC float32 in about [-1, 1].
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from pmsfc_jax.models import pggan

Array = jax.Array
SQRT2 = math.sqrt(2.0)
LRELU_SLOPE = 0.2
MBSTD_EPS = 1e-8


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
  """Architecture of a fully grown PGGAN discriminator (``nf`` as in :class:`pggan.GeneratorConfig`)."""

  resolution: int = 32
  fmaps_base: int = 16384
  fmaps_max: int = 512
  num_channels: int = 3
  mbstd_group_size: int = 4
  mbstd_num_features: int = 1

  def __post_init__(self):
    r = self.resolution
    if not isinstance(r, int) or r < 8 or r > 1024 or r & (r - 1):
      raise ValueError(f'DiscriminatorConfig.resolution must be a power of two in [8, 1024], got {r!r}')
    for name in ('fmaps_base', 'fmaps_max', 'num_channels', 'mbstd_group_size', 'mbstd_num_features'):
      v = getattr(self, name)
      if not isinstance(v, int) or v <= 0:
        raise ValueError(f'DiscriminatorConfig.{name} must be a positive int, got {v!r}')

  def nf(self, res: int) -> int:
    return min(self.fmaps_base // res, self.fmaps_max)

  @classmethod
  def for_generator(cls, g: pggan.GeneratorConfig, **kwargs) -> 'DiscriminatorConfig':
    return cls(
      resolution=g.resolution,
      fmaps_base=g.fmaps_base,
      fmaps_max=g.fmaps_max,
      num_channels=g.num_channels,
      **kwargs,
    )

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def minibatch_stddev(x: Array, group_size: int = 4, num_features: int = 1) -> Array:
  """Appends the minibatch standard deviation feature(s) to NHWC ``x`` (PGGAN Sec. 3).

  As TF ``minibatch_stddev_layer``: the batch is split into groups by ``reshape([G, M, ...])`` (sample n
  belongs to group n % M, M = N / G); per group, the std over its G members (eps 1e-8 inside the sqrt) is
  averaged over H, W and the channels of each of the ``num_features`` channel slices, then broadcast back
  to every member as ``num_features`` extra channels. ``G = min(group_size, N)``; N must be divisible by G.
  """
  n, h, w, c = x.shape
  g = min(group_size, n)
  if n % g:
    raise ValueError(f'minibatch_stddev: batch size {n} is not divisible by the group size {g}')
  if c % num_features:
    raise ValueError(f'minibatch_stddev: {c} channels are not divisible by num_features={num_features}')
  y = x.astype(jnp.float32).reshape(g, n // g, h, w, num_features, c // num_features)
  y = y - jnp.mean(y, axis=0, keepdims=True)
  y = jnp.sqrt(jnp.mean(jnp.square(y), axis=0) + MBSTD_EPS)  # [M, H, W, F, c/F]
  y = jnp.mean(y, axis=(1, 2, 4))  # [M, F]
  y = jnp.tile(y, (g, 1))  # [N, F]: row n is group n % M
  y = jnp.broadcast_to(y[:, None, None, :], (n, h, w, num_features)).astype(x.dtype)
  return jnp.concatenate([x, y], axis=-1)


def downscale_2x(x: Array) -> Array:
  """2x2 average pooling (TF ``downscale2d``), NHWC."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class EqualizedConv(nn.Module):
  """Conv ``kernel x kernel`` 'SAME' with the equalized-LR scale gain / sqrt(fan_in), plus bias."""

  features: int
  kernel: int = 3
  gain: float = SQRT2

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cin = x.shape[-1]
    w = self.param('weight', nn.initializers.normal(1.0), (self.kernel, self.kernel, cin, self.features))
    scale = self.gain / math.sqrt(cin * self.kernel * self.kernel)
    y = jax.lax.conv_general_dilated(
      x, (w * scale).astype(x.dtype), (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )
    return y + self.param('bias', nn.initializers.zeros, (self.features,)).astype(y.dtype)


class EqualizedDense(nn.Module):
  """Dense over the flattened input with the equalized-LR scale, plus bias."""

  features: int
  gain: float = SQRT2

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = x.reshape(x.shape[0], -1)
    w = self.param('weight', nn.initializers.normal(1.0), (x.shape[-1], self.features))
    y = x @ (w * (self.gain / math.sqrt(x.shape[-1]))).astype(x.dtype)
    return y + self.param('bias', nn.initializers.zeros, (self.features,)).astype(y.dtype)


class PGGANDiscriminator(nn.Module):
  """Images (N, R, R, C) -> logits (N,)."""

  config: DiscriminatorConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    if x.ndim != 4 or x.shape[1:] != (cfg.resolution, cfg.resolution, cfg.num_channels):
      raise ValueError(
        f'discriminator expects images (N, {cfg.resolution}, {cfg.resolution}, '
        f'{cfg.num_channels}), got {tuple(x.shape)}'
      )
    act = lambda t: nn.leaky_relu(t, LRELU_SLOPE)
    x = act(EqualizedConv(cfg.nf(cfg.resolution), kernel=1, name='FromRGB')(x))
    res = cfg.resolution
    while res > 4:
      with_block = f'{res}x{res}'
      x = act(EqualizedConv(cfg.nf(res), name=f'{with_block}_Conv0')(x))
      x = downscale_2x(act(EqualizedConv(cfg.nf(res // 2), name=f'{with_block}_Conv1')(x)))
      res //= 2
    x = minibatch_stddev(x, cfg.mbstd_group_size, cfg.mbstd_num_features)
    x = act(EqualizedConv(cfg.nf(4), name='4x4_Conv')(x))
    x = act(EqualizedDense(cfg.nf(2), name='4x4_Dense0')(x))
    x = EqualizedDense(1, gain=1.0, name='4x4_Dense1')(x)
    return x[:, 0]


def init_params(config: DiscriminatorConfig, rng: Array):
  """Random N(0, 1) weights and zero biases; a batch of ``mbstd_group_size`` zeros traces the shapes."""
  x = jnp.zeros((config.mbstd_group_size, config.resolution, config.resolution, config.num_channels))
  return PGGANDiscriminator(config).init(rng, x)['params']


def discriminate(config: DiscriminatorConfig, params, images: Array) -> Array:
  """D(x): (N, R, R, C) -> logits (N,)."""
  return PGGANDiscriminator(config).apply({'params': params}, images)
