"""Independent PyTorch reference of the PGGAN generator (does NOT import pmsfc_jax).

Written from the official description (Karras et al. 2018, NVIDIA's networks.G_paper and the InterFaceGAN /
mGANprior PyTorch port whose state-dict layout it reproduces):

* every layer: pixel norm (eps 1e-8, over channels) of its input -> [nearest 2x upsample] -> conv without
  bias -> multiply by the equalized-LR scale gain / sqrt(fan_in) -> + bias -> LeakyReLU(0.2);
* layer0 is a 4x4 conv with padding 3 applied to the latent viewed as a 1x1 image (fan-in 16 z, gain
  sqrt(2), i.e. TF's Dense gain sqrt(2)/4 over sqrt(z));
* fused blocks (``use_conv2d_transpose``): weight [k, k, in, out] scaled, zero-padded to (k+1)x(k+1), the
  four shifted copies summed, permuted to [in, out, k+1, k+1] and applied by conv_transpose2d(stride 2,
  padding 1);
* ToRGB: pixel norm -> 1x1 conv, gain 1, linear; one per resolution, the last one makes the image.

State-dict keys: ``lod``, ``layer{i}.conv.weight``, ``layer{i}.weight`` (fused), ``layer{i}.wscale.bias``,
``output{b}.conv.weight``, ``output{b}.wscale.bias`` (exactly the mGANprior ``.pth`` files).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def pixel_norm(x):
  return x / torch.sqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class WScale(nn.Module):
  def __init__(self, out_channels, scale):
    super().__init__()
    self.scale = scale
    self.bias = nn.Parameter(torch.zeros(out_channels))

  def forward(self, x):
    return x * self.scale + self.bias.view(1, -1, 1, 1)


SQRT2 = math.sqrt(2.0)


class Block(nn.Module):
  def __init__(
    self, in_ch, out_ch, kernel=3, padding=1, upsample=False, fused=False, gain=SQRT2, linear=False
  ):
    super().__init__()
    self.upsample, self.fused, self.linear = upsample, upsample and fused, linear
    scale = gain / math.sqrt(in_ch * kernel * kernel)
    if self.fused:
      self.weight = nn.Parameter(torch.randn(kernel, kernel, in_ch, out_ch))
      self.kernel_scale = scale
    else:
      self.conv = nn.Conv2d(in_ch, out_ch, kernel, 1, padding, bias=False)
    self.wscale = WScale(out_ch, 1.0 if self.fused else scale)

  def forward(self, x):
    x = pixel_norm(x)
    if self.fused:
      k = self.weight * self.kernel_scale
      k = F.pad(k, (0, 0, 0, 0, 1, 1, 1, 1))
      k = k[1:, 1:] + k[:-1, 1:] + k[1:, :-1] + k[:-1, :-1]
      x = F.conv_transpose2d(x, k.permute(2, 3, 0, 1), stride=2, padding=1)
    else:
      if self.upsample:
        x = F.interpolate(x, scale_factor=2, mode='nearest')
      x = self.conv(x)
    x = self.wscale(x)
    return x if self.linear else F.leaky_relu(x, 0.2)


class ReferencePGGAN(nn.Module):
  """``forward(z)`` -> (image NCHW, [output of layer0, layer1, ...]) of a fully grown generator."""

  def __init__(self, resolution, z_dim, fmaps_base, fmaps_max, fused_scale=False, num_channels=3):
    super().__init__()
    self.num_blocks = int(math.log2(resolution)) - 1
    self.lod = nn.Parameter(torch.zeros(()))
    nf = lambda res: min(fmaps_base // res, fmaps_max)
    for b in range(self.num_blocks):
      res = 4 * 2**b
      if b == 0:
        first = Block(z_dim, nf(4), kernel=4, padding=3)
      else:
        fused = fused_scale is True or (fused_scale == 'auto' and res >= 128)
        first = Block(nf(res // 2), nf(res), upsample=True, fused=fused)
      self.add_module(f'layer{2 * b}', first)
      self.add_module(f'layer{2 * b + 1}', Block(nf(res), nf(res)))
      self.add_module(f'output{b}', Block(nf(res), num_channels, kernel=1, padding=0, gain=1.0, linear=True))

  def forward(self, z):
    x = z.view(z.shape[0], z.shape[1], 1, 1)
    features = []
    for i in range(2 * self.num_blocks):
      x = getattr(self, f'layer{i}')(x)
      features.append(x)
    return getattr(self, f'output{self.num_blocks - 1}')(x), features


def random_model(resolution, z_dim, fmaps_base, fmaps_max, fused_scale=False, seed=0):
  """A reference model with N(0,1) weights and N(0, 0.1) biases (so biases matter in the comparison)."""
  torch.manual_seed(seed)
  model = ReferencePGGAN(resolution, z_dim, fmaps_base, fmaps_max, fused_scale)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name == 'lod':
        continue
      if name.endswith('bias'):
        p.copy_(0.1 * torch.randn_like(p))
      else:
        p.copy_(torch.randn_like(p))
  return model.eval()


def run(model, z: np.ndarray):
  """numpy latents -> (image NHWC, {layer l >= 1: features NHWC}) in float32 numpy."""
  with torch.no_grad():
    img, feats = model(torch.from_numpy(np.asarray(z, np.float32)))
  to_nhwc = lambda t: t.permute(0, 2, 3, 1).numpy()
  return to_nhwc(img), {i + 1: to_nhwc(f) for i, f in enumerate(feats)}
