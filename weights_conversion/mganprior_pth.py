"""mGANprior / PmSFC PyTorch PGGAN state dicts (``pggan_celebahq1024_generator.pth`` etc.) -> Flax params.

These files are the state dict of the InterFaceGAN/mGANprior ``PGGanGeneratorModel``: for block b
(resolution 4 * 2**b) the layers ``layer{2b}`` and ``layer{2b+1}`` and a ToRGB ``output{b}``, plus a scalar
``lod``::

  lod                     ()                 must be 0 (a fully grown generator)
  layer0.conv.weight      [nf4, z, 4, 4]     TF 4x4/Dense as a 4x4 conv with padding 3 on the 1x1 latent:
                                             equals Dense.view(z, nf4, 4, 4).permute(1, 0, 2, 3).flip(2, 3)
  layer{i}.conv.weight    [out, in, 3, 3]    3x3 convs (OIHW)
  layer{2b}.weight        [3, 3, in, out]    fused upsample + conv (``use_conv2d_transpose``) blocks
  layer{i}.wscale.bias    [out]
  output{b}.conv.weight   [C, nf, 1, 1]      ToRGB of every resolution; only the last is used
  output{b}.wscale.bias   [C]

The lower-resolution ToRGB layers (``output{b}`` with b < last) exist only for progressive growing and do
not influence a fully grown generator. They must be present with their exact shapes (a file lacking them
or with other shapes is not the layout we think it is), but their values are ignored.

The equalized-LR scales of the PyTorch port (``wscale``: gain / sqrt(in * k * k), with the 4x4 layer0 conv
giving sqrt(2) / sqrt(16 z) = TF's Dense gain sqrt(2)/4 over sqrt(z)) are applied at call time by
``pmsfc_jax.models.pggan``; the stored values are copied, only re-laid out.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np

from pmsfc_jax.models import pggan
from weights_conversion import common
from weights_conversion.common import ConversionError
from weights_conversion.common import Ignored
from weights_conversion.common import Rule

FORMAT = 'mganprior_pth'
_KEY_RE = re.compile(r'^(layer|output)(\d+)\.')


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """``torch.load(weights_only=True)`` -> ``{key: float32 ndarray}``; refuses anything but tensors."""
  import torch  # Only the converter needs torch; the library never imports it.

  try:
    obj = torch.load(os.fspath(path), map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises UnpicklingError / RuntimeError with a long explanation.
    raise ConversionError(
      f'{path}: cannot be read as a PyTorch state dict with torch.load(weights_only=True) '
      f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e})'
    ) from None
  if isinstance(obj, Mapping) and 'lod' not in obj and isinstance(obj.get('state_dict'), Mapping):
    obj = obj['state_dict']
  if not isinstance(obj, Mapping):
    raise ConversionError(
      f'{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}'
    )
  out = {}
  for k, v in obj.items():
    if not isinstance(v, torch.Tensor):
      raise ConversionError(f'{path}: key {k!r} holds a {type(v).__name__}, expected a tensor')
    out[str(k)] = v.detach().to(torch.float32).cpu().numpy()
  return out


def _block_count(state: Mapping[str, Any]) -> int:
  blocks = set()
  for k in state:
    m = _KEY_RE.match(k)
    if m:
      blocks.add(int(m.group(2)) // 2 if m.group(1) == 'layer' else int(m.group(2)))
  n = 0
  while n in blocks:
    n += 1
  return n


def infer_config(state: Mapping[str, np.ndarray], where: str = 'state dict') -> pggan.GeneratorConfig:
  """Reads resolution, z_dim, fmaps and fused_scale from the key names and tensor shapes."""
  num_blocks = _block_count(state)
  if num_blocks < 2:
    raise ConversionError(
      f'{where}: found {num_blocks} PGGAN blocks (keys layer{{i}}.* / output{{b}}.*); '
      'expected a generator of resolution >= 8 (keys: '
      f'{sorted(state)[:6]}{" ..." if len(state) > 6 else ""})'
    )
  resolution = 4 * 2 ** (num_blocks - 1)
  if resolution > 1024:
    raise ConversionError(f'{where}: {num_blocks} blocks means resolution {resolution} > 1024')

  def shape_of(*keys, dim):
    for k in keys:
      if k in state and np.ndim(state[k]) > dim:
        return int(np.shape(state[k])[dim])
    raise ConversionError(f'{where}: missing key {keys[0]!r}')

  z_dim = shape_of('layer0.conv.weight', dim=1)
  channels, fused = {}, {}
  for b in range(num_blocks):
    res = 4 * 2**b
    channels[res] = shape_of(f'layer{2 * b + 1}.conv.weight', f'layer{2 * b + 1}.wscale.bias', dim=0)
    if b > 0:
      fused[res] = f'layer{2 * b}.weight' in state
  last = num_blocks - 1
  num_channels = shape_of(f'output{last}.conv.weight', f'output{last}.wscale.bias', dim=0)
  fmaps_base, fmaps_max = common.fmaps_from_channels(channels, where)
  return pggan.GeneratorConfig(
    resolution=resolution,
    z_dim=z_dim,
    fmaps_base=fmaps_base,
    fmaps_max=fmaps_max,
    num_channels=num_channels,
    fused_scale=common.fused_from_blocks(fused, where),
  )


def dense_from_conv4x4(w: np.ndarray) -> np.ndarray:
  """layer0 [nf, z, 4, 4] -> TF Dense [z, nf * 16] (inverse of view(z,nf,4,4).permute(1,0,2,3).flip(2,3))."""
  nf, z = w.shape[:2]
  return w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(z, nf * 16)


def oihw_to_hwio(w: np.ndarray) -> np.ndarray:
  return w.transpose(2, 3, 1, 0)


def rules(config: pggan.GeneratorConfig) -> tuple[list[Rule], list[Ignored]]:
  """The name map: one explicit transform per tensor of a ``config`` generator."""
  table = pggan.layer_table(config)
  c = config.num_channels
  out: list[Rule] = []
  ignored = [Ignored('lod', (), 'progressive-growing level; checked to be 0')]
  for i, spec in enumerate(table):
    target = f'{spec.block}/{spec.name}'
    if spec.name == 'Dense':
      out.append(
        Rule(
          f'layer{i}.conv.weight',
          (spec.out_channels, spec.in_channels, 4, 4),
          f'{target}/weight',
          dense_from_conv4x4,
          'flip(2,3), permute(1,0,2,3), reshape(z, nf*16)',
        )
      )
    elif spec.name == 'Conv0_up':
      out.append(
        Rule(
          f'layer{i}.weight',
          (3, 3, spec.in_channels, spec.out_channels),
          f'{target}/weight',
          common.identity,
          'already [k,k,in,out]',
        )
      )
    else:
      out.append(
        Rule(
          f'layer{i}.conv.weight',
          (spec.out_channels, spec.in_channels, 3, 3),
          f'{target}/weight',
          oihw_to_hwio,
          'OIHW -> HWIO',
        )
      )
    out.append(Rule(f'layer{i}.wscale.bias', (spec.out_channels,), f'{target}/bias', common.identity))
  last = len(table) // 2 - 1
  for b in range(last + 1):
    nf = table[2 * b + 1].out_channels
    if b == last:
      out.append(Rule(f'output{b}.conv.weight', (c, nf, 1, 1), 'ToRGB/weight', oihw_to_hwio, 'OIHW -> HWIO'))
      out.append(Rule(f'output{b}.wscale.bias', (c,), 'ToRGB/bias', common.identity))
    else:
      why = f'ToRGB of {4 * 2**b}x{4 * 2**b}, unused by a fully grown generator'
      ignored += [
        Ignored(f'output{b}.conv.weight', (c, nf, 1, 1), why),
        Ignored(f'output{b}.wscale.bias', (c,), why),
      ]
  return out, ignored


def convert_state_dict(
  state: Mapping[str, np.ndarray], where: str = 'state dict', **config_overrides
) -> tuple[pggan.GeneratorConfig, dict]:
  """State dict -> (GeneratorConfig, params). ``config_overrides`` must agree with the inferred config."""
  config = common.check_config_override(infer_config(state, where), config_overrides, where)
  lod = np.asarray(state.get('lod', 0.0), np.float32)
  if lod.size == 1 and float(lod.reshape(())) != 0.0:
    raise ConversionError(
      f'{where}: lod = {float(lod.reshape(()))}: this generator is in the middle of '
      'progressive growing; only fully grown generators (lod = 0) are supported'
    )
  rule_list, ignored = rules(config)
  params = common.apply_rules(state, rule_list, ignored, config, where)
  return config, params


def convert(path: str | os.PathLike, **config_overrides) -> tuple[pggan.GeneratorConfig, dict]:
  """Reads a ``.pth`` state dict and converts it (see module docstring)."""
  return convert_state_dict(load_state_dict(path), str(path), **config_overrides)
