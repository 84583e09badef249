"""PGGAN generator (Karras et al., ICLR 2018) in Flax, split at layer l into G1 / G2.

The architecture is the official one (``networks.py:G_paper`` of NVIDIA's progressive_growing_of_gans,
fully grown, ``lod = 0``), which is also what the mGANprior / PmSFC PyTorch ports compute:

* the latent z is pixel-normalised (eps 1e-8);
* 4x4 block: TF "Dense" z -> 4x4 x nf (fan-in z_dim, gain sqrt(2)/4, reshaped NCHW exactly as TF does),
  then a 3x3 conv;
* every later resolution: nearest 2x upsample -> 3x3 conv -> 3x3 conv (``fused_scale`` replaces the
  upsample + first conv by a stride-2 transposed conv with the 4-tap summed kernel, TF ``Conv0_up``);
* every conv is preceded by a pixel norm (the TF code normalises after each activation, the PyTorch ports
  before each conv: the same thing), followed by the equalized-LR scale gain/sqrt(fan_in) applied at call
  time, then the bias, then LeakyReLU 0.2;
* a linear 1x1 ToRGB (gain 1) at the final resolution; no tanh, output range about [-1, 1].

Layer numbering (official PmSFC / issue #2): layer 0 is the latent, layer 1 the 4x4 dense output, layer 2
the 4x4 conv, layer 3 the first 8x8 conv, ..., layer ``num_layers`` the last conv at full resolution.
Features are taken after the activation, before the next pixel norm. ``G1(z, l)`` returns the features of
layer l and ``G2(f, l)`` runs layers l+1 .. num_layers plus ToRGB, so ``G2(G1(z, l), l) == G(z)``.

Parameters keep the checkpoint values untouched (equalized-LR scales are applied at call time):
``{'4x4': {'Dense': {weight [z_dim, 16 nf], bias}, 'Conv': {weight [3,3,in,out], bias}},
'8x8': {'Conv0' or 'Conv0_up': ..., 'Conv1': ...}, ..., 'ToRGB': {weight [1,1,nf,3], bias}}``.
The Dense weight keeps TF's column order (``out_channel * 16 + y * 4 + x``); conv kernels are HWIO.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Params = Any

PIXEL_NORM_EPS = 1e-8
LRELU_SLOPE = 0.2
SQRT2 = math.sqrt(2.0)


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
  """Architecture of a fully grown PGGAN generator.

  ``fused_scale``: False (separate nearest upsample + conv), True (fused transposed conv at every
  resolution >= 8), or ``'auto'`` (fused from 128x128 on, as TF's ``fused_scale='auto'``).
  ``nf(res) = min(fmaps_base // res, fmaps_max)``; the official models use 16384 / 512 (TF's
  ``fmap_base=8192`` counts stages, not pixels: nf(stage) = 8192 / 2**stage = 16384 / res).
  """

  resolution: int = 1024
  z_dim: int = 512
  fmaps_base: int = 16384
  fmaps_max: int = 512
  num_channels: int = 3
  fused_scale: Union[bool, str] = False

  def __post_init__(self):
    r = self.resolution
    if not isinstance(r, int) or r < 8 or r > 1024 or r & (r - 1):
      raise ValueError(f'GeneratorConfig.resolution must be a power of two in [8, 1024], got {r!r}')
    if self.fused_scale not in (True, False, 'auto'):
      raise ValueError(f"GeneratorConfig.fused_scale must be True, False or 'auto', got {self.fused_scale!r}")
    for name in ('z_dim', 'fmaps_base', 'fmaps_max', 'num_channels'):
      v = getattr(self, name)
      if not isinstance(v, int) or v <= 0:
        raise ValueError(f'GeneratorConfig.{name} must be a positive int, got {v!r}')

  @property
  def resolution_log2(self) -> int:
    return int(math.log2(self.resolution))

  @property
  def num_layers(self) -> int:
    """Index of the last conv layer (layer 0 is the latent): 2 per resolution from 4x4."""
    return 2 * (self.resolution_log2 - 1)

  def nf(self, res: int) -> int:
    return min(self.fmaps_base // res, self.fmaps_max)

  def is_fused(self, res: int) -> bool:
    if self.fused_scale == 'auto':
      return res >= 128
    return bool(self.fused_scale)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> 'GeneratorConfig':
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
      raise ValueError(f'unknown GeneratorConfig keys: {sorted(unknown)}')
    return cls(**d)


@dataclasses.dataclass(frozen=True)
class LayerSpec:
  """One numbered layer: where its params live and what it outputs."""

  index: int
  block: str  # '4x4', '8x8', ...
  name: str  # 'Dense', 'Conv', 'Conv0', 'Conv0_up', 'Conv1'
  resolution: int  # spatial size of the output
  in_channels: int
  out_channels: int
  upsample: bool  # nearest 2x upsample (or fused transposed conv) before this conv


def layer_table(config: GeneratorConfig) -> tuple[LayerSpec, ...]:
  """All numbered layers 1..num_layers of ``config`` (layer 0, the latent, has no params)."""
  specs = []
  in_ch = config.z_dim
  for res_log2 in range(2, config.resolution_log2 + 1):
    res = 2**res_log2
    nf = config.nf(res)
    block = f'{res}x{res}'
    if res == 4:
      first = LayerSpec(len(specs) + 1, block, 'Dense', 4, in_ch, nf, False)
      second = LayerSpec(len(specs) + 2, block, 'Conv', 4, nf, nf, False)
    else:
      name = 'Conv0_up' if config.is_fused(res) else 'Conv0'
      first = LayerSpec(len(specs) + 1, block, name, res, in_ch, nf, True)
      second = LayerSpec(len(specs) + 2, block, 'Conv1', res, nf, nf, False)
    specs += [first, second]
    in_ch = nf
  return tuple(specs)


def feature_shape(config: GeneratorConfig, layer: int) -> tuple[int, ...]:
  """Shape (without batch) of ``G1(z, layer)``: (z_dim,) for layer 0, else (H, W, C) NHWC."""
  check_layer(config, layer)
  if layer == 0:
    return (config.z_dim,)
  spec = layer_table(config)[layer - 1]
  return (spec.resolution, spec.resolution, spec.out_channels)


def feature_shapes(config: GeneratorConfig) -> dict[int, tuple[int, ...]]:
  """``{layer: feature shape}`` for every split layer 0..num_layers."""
  return {l: feature_shape(config, l) for l in range(config.num_layers + 1)}


def check_layer(config: GeneratorConfig, layer: int):
  if not isinstance(layer, (int, np.integer)) or not 0 <= layer <= config.num_layers:
    raise ValueError(
      f'layer must be an int in [0, {config.num_layers}] for a {config.resolution}x{config.resolution} '
      f'generator, got {layer!r}'
    )


def pixel_norm(x: Array, axis: int = -1) -> Array:
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=axis, keepdims=True) + PIXEL_NORM_EPS)


def upsample_nearest_2x(x: Array) -> Array:
  b, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
  return x.reshape(b, 2 * h, 2 * w, c)


def _conv(x: Array, kernel: Array) -> Array:
  return jax.lax.conv_general_dilated(
    x, kernel, window_strides=(1, 1), padding='SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )


def fused_upsample_conv(x: Array, kernel: Array) -> Array:
  """TF ``upscale2d_conv2d``: pad the 3x3 kernel to 4x4, sum its four shifts, transposed conv stride 2.

  ``kernel`` is HWIO [3, 3, in, out]. The transposed conv (padding 1, as TF 'SAME' / PyTorch
  ``conv_transpose2d(stride=2, padding=1)``) is written as a correlation over the 2x-dilated input with the
  spatially flipped kernel and padding k - 1 - 1 = 2.
  """
  k = jnp.pad(kernel, ((1, 1), (1, 1), (0, 0), (0, 0)))
  k = k[1:, 1:] + k[:-1, 1:] + k[1:, :-1] + k[:-1, :-1]
  k = k[::-1, ::-1]
  return jax.lax.conv_general_dilated(
    x,
    k,
    window_strides=(1, 1),
    padding=((2, 2), (2, 2)),
    lhs_dilation=(2, 2),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )


class EqualizedLayer(nn.Module):
  """One numbered PGGAN layer: pixel norm -> [upsample] -> conv/dense * gain/sqrt(fan_in) + bias -> act.

  The weight is stored unscaled (equalized learning rate: the scale is applied at call time).
  """

  kind: str  # 'dense', 'conv', 'conv_up', 'conv_fused_up', 'torgb'
  in_channels: int
  out_channels: int
  gain: float = SQRT2
  activation: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    init = nn.initializers.normal(stddev=1.0)
    kernel_size = {'dense': None, 'torgb': 1}.get(self.kind, 3)
    if self.kind == 'dense':
      x = pixel_norm(x)
      w = self.param('weight', init, (self.in_channels, 16 * self.out_channels))
      scale = self.gain / math.sqrt(self.in_channels)
      y = x @ (w * scale).astype(x.dtype)
      # TF reshapes to NCHW [out, 4, 4]; move channels last.
      y = y.reshape(x.shape[0], self.out_channels, 4, 4).transpose(0, 2, 3, 1)
    else:
      w = self.param('weight', init, (kernel_size, kernel_size, self.in_channels, self.out_channels))
      scale = self.gain / math.sqrt(self.in_channels * kernel_size * kernel_size)
      x = pixel_norm(x)
      w = (w * scale).astype(x.dtype)
      if self.kind == 'conv_fused_up':
        y = fused_upsample_conv(x, w)
      else:
        if self.kind == 'conv_up':
          x = upsample_nearest_2x(x)
        y = _conv(x, w)
    b = self.param('bias', nn.initializers.zeros, (self.out_channels,))
    y = y + b.astype(y.dtype)
    if self.activation:
      y = nn.leaky_relu(y, LRELU_SLOPE)
    return y


class _Block(nn.Module):
  """The two layers of one resolution, run from ``first`` to ``last`` (0 or 1) inclusive."""

  specs: tuple[LayerSpec, LayerSpec]

  @nn.compact
  def __call__(self, x: Array, first: int, last: int) -> Array:
    for spec in self.specs[first : last + 1]:
      if spec.name == 'Dense':
        kind, gain = 'dense', SQRT2 / 4
      elif spec.name == 'Conv0_up':
        kind, gain = 'conv_fused_up', SQRT2
      elif spec.upsample:
        kind, gain = 'conv_up', SQRT2
      else:
        kind, gain = 'conv', SQRT2
      x = EqualizedLayer(kind, spec.in_channels, spec.out_channels, gain, name=spec.name)(x)
    return x


class PGGANGenerator(nn.Module):
  """Fully grown PGGAN generator; ``__call__(x, start, stop)`` runs layers start+1 .. stop.

  ``start = 0`` means x is the latent z (B, z_dim); otherwise x holds layer ``start``'s features NHWC.
  ``stop = None`` runs to the end, including ToRGB, and returns the image NHWC.
  """

  config: GeneratorConfig

  @nn.compact
  def __call__(self, x: Array, start: int = 0, stop: int | None = None) -> Array:
    cfg = self.config
    table = layer_table(cfg)
    end = cfg.num_layers if stop is None else stop
    for i in range(0, len(table), 2):
      lo, hi = i + 1, i + 2  # layer indices of this block
      first, last = max(lo, start + 1), min(hi, end)
      if first <= last:
        x = _Block((table[i], table[i + 1]), name=table[i].block)(x, first - lo, last - lo)
    if stop is None:
      x = EqualizedLayer(
        'torgb', table[-1].out_channels, cfg.num_channels, gain=1.0, activation=False, name='ToRGB'
      )(x)
    return x


# ----------------------------------------------------------------------------------------------------
# Pure functional API over a params pytree.


def init_params(config: GeneratorConfig, rng: Array) -> Params:
  """Random N(0, 1) weights and zero biases (the equalized-LR initialisation)."""
  z = jnp.zeros((1, config.z_dim), jnp.float32)
  return PGGANGenerator(config).init(rng, z)['params']


def generate(config: GeneratorConfig, params: Params, z: Array) -> Array:
  """G(z): (B, z_dim) -> (B, H, W, num_channels) in about [-1, 1]."""
  _check_latents(config, z)
  return PGGANGenerator(config).apply({'params': params}, z)


def g1(config: GeneratorConfig, params: Params, z: Array, layer: int) -> Array:
  """G1 of the split at ``layer``: (B, z_dim) -> features of ``layer`` (B, H, W, C)."""
  check_layer(config, layer)
  _check_latents(config, z)
  if layer == 0:
    return z
  return PGGANGenerator(config).apply({'params': params}, z, 0, layer)


def g2(config: GeneratorConfig, params: Params, features: Array, layer: int, remat: bool = False) -> Array:
  """G2 of the split at ``layer``: features of ``layer`` -> image (B, H, W, num_channels).

  Computes in the dtype of ``features`` (the layers cast their f32 params to it). ``remat``: one
  ``jax.checkpoint`` per resolution block, so a backward pass keeps only the block boundaries and
  recomputes each block's insides (less activation memory, about one more G2 forward pass; same values).
  """
  check_layer(config, layer)
  expected = feature_shape(config, layer)
  if tuple(features.shape[1:]) != expected:
    raise ValueError(
      f'G2 at layer {layer} expects features of shape (B, {", ".join(map(str, expected))}), '
      f'got {tuple(features.shape)}'
    )
  module = PGGANGenerator(config)
  if not remat:
    return module.apply({'params': params}, features, layer, None)
  # Blocks end at even layers (block '4x4' = layers 1-2, '8x8' = 3-4, ...); the last one adds ToRGB.
  stops = [l for l in range(layer + 1, config.num_layers) if l % 2 == 0] + [None]
  x, start = features, layer
  for stop in stops:
    x = jax.checkpoint(lambda p, h, a=start, b=stop: module.apply({'params': p}, h, a, b))(params, x)
    start = stop
  return x


def _check_latents(config: GeneratorConfig, z: Array):
  if z.ndim != 2 or z.shape[1] != config.z_dim:
    raise ValueError(f'latents must have shape (B, {config.z_dim}), got {tuple(z.shape)}')


@dataclasses.dataclass(frozen=True)
class Generator:
  """A generator with its weights: ``config`` is static, ``params`` a pytree (pass it to jit as an arg).

  Convenience wrapper; ``G(z)``, ``g1(z, l)``, ``g2(f, l)`` are the functions above bound to config.
  Registered as a pytree whose only leaves are the params, so it can cross ``jit`` boundaries.
  """

  config: GeneratorConfig
  params: Params

  def __call__(self, z: Array) -> Array:
    return generate(self.config, self.params, z)

  def g1(self, z: Array, layer: int) -> Array:
    return g1(self.config, self.params, z, layer)

  def g2(self, features: Array, layer: int, remat: bool = False) -> Array:
    return g2(self.config, self.params, features, layer, remat)

  def feature_shape(self, layer: int) -> tuple[int, ...]:
    return feature_shape(self.config, layer)


jax.tree_util.register_dataclass(Generator, data_fields=['params'], meta_fields=['config'])


def param_shapes(config: GeneratorConfig) -> dict[str, tuple[int, ...]]:
  """Flat ``{'8x8/Conv0/weight': shape}`` of every parameter, the layout converters must produce."""
  shapes = jax.eval_shape(functools.partial(init_params, config), jax.random.key(0))
  return {
    '/'.join(str(k.key) for k in path): tuple(leaf.shape)
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]
  }
