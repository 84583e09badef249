"""NVIDIA's official PGGAN TensorFlow pickles (``karras2018iclr-*.pkl``) -> Flax params, without TensorFlow.

The file is a pickled tuple ``(G, D, Gs)`` of ``tfutil.Network`` objects. It is read with
:mod:`weights_conversion.safe_pickle` (numpy arrays and inert network stubs only). ``Gs`` (the moving
average of G used for all published results) is converted. Its state dict holds ``static_kwargs`` (the
arguments given to ``networks.G_paper``), ``build_module_src`` (the source of ``networks.py``; its
function defaults are read with ``ast.literal_eval``, nothing is executed) and ``variables``::

  lod                          ()                 must be 0 (fully grown)
  4x4/Dense/weight             [z, nf*16]         kept as is (column = out_channel*16 + y*4 + x)
  4x4/Dense/bias               [nf]
  4x4/Conv/weight              [3, 3, in, out]    kept as is (HWIO)
  {r}x{r}/Conv0/weight         [3, 3, in, out]    kept as is
  {r}x{r}/Conv0_up/weight      [3, 3, out, in]    TF upscale2d_conv2d layout -> transposed to [3, 3, in, out]
  {r}x{r}/Conv1/weight         [3, 3, in, out]
  {r}x{r}/Conv*/bias           [out]
  ToRGB_lod{n}/weight, /bias   [1, 1, nf, C], [C] n = 0 is the final resolution; n > 0 (lower resolutions,
                                                  progressive growing only) must exist with their shapes
                                                  but are ignored

Architecture: TF's ``fmap_base`` counts stages (nf(stage) = fmap_base / 2**stage with stage = log2(res) - 1),
so ``GeneratorConfig.fmaps_base = 2 * fmap_base`` (official 8192 -> 16384). ``latent_size=None`` means
``min(fmap_base, fmap_max)``. Conditional (``label_size > 0``) generators and the ablation switches
``use_wscale / normalize_latents / use_pixelnorm / use_leakyrelu = False`` are refused. The ``dtype`` kwarg
(compute precision) is recorded but the converted model computes in float32.
"""

from __future__ import annotations

import ast
import math
import os
from typing import Any

import numpy as np

from pmsfc_jax.models import pggan
from weights_conversion import common
from weights_conversion import safe_pickle
from weights_conversion.common import ConversionError
from weights_conversion.common import Ignored
from weights_conversion.common import Rule

FORMAT = 'nvidia_tf_pkl'
SUPPORTED_BUILD_FUNCS = ('G_paper',)

# networks.G_paper defaults of progressive_growing_of_gans, used when build_module_src is unavailable.
# fmt: off
G_PAPER_DEFAULTS = dict(num_channels=1, resolution=32, label_size=0, fmap_base=8192, fmap_decay=1.0, fmap_max=512,
                        latent_size=None, normalize_latents=True, use_wscale=True, use_pixelnorm=True,
                        pixelnorm_epsilon=1e-8, use_leakyrelu=True, dtype='float32', fused_scale=True,
                        structure=None, is_template_graph=False)
# fmt: on


def load_networks(path: str | os.PathLike) -> Any:
  return safe_pickle.load(path)


def select_gs(obj: Any, where: str) -> safe_pickle.NetworkStub:
  """``(G, D, Gs)`` -> Gs; a lone network is accepted as it is."""
  if isinstance(obj, safe_pickle.NetworkStub):
    return obj
  if isinstance(obj, (tuple, list)) and len(obj) == 3 and isinstance(obj[2], safe_pickle.NetworkStub):
    return obj[2]
  raise ConversionError(
    f'{where}: expected a pickled (G, D, Gs) tuple of tfutil.Network, got '
    f'{type(obj).__name__}{f" of length {len(obj)}" if isinstance(obj, (tuple, list)) else ""}'
  )


def function_defaults(source: str | None, func_name: str) -> dict | None:
  """Literal default values of ``func_name``'s keyword arguments in ``source`` (parsed, never executed)."""
  if not source:
    return None
  try:
    tree = ast.parse(source)
  except SyntaxError:
    return None
  for node in tree.body:
    if isinstance(node, ast.FunctionDef) and node.name == func_name:
      args = node.args.args[len(node.args.args) - len(node.args.defaults) :]
      out = {}
      for arg, default in list(zip(args, node.args.defaults)) + list(
        zip(node.args.kwonlyargs, node.args.kw_defaults)
      ):
        if default is None:
          continue
        try:
          out[arg.arg] = ast.literal_eval(default)
        except ValueError:
          pass  # Non-literal default: not an architecture switch we read.
      return out
  return None


def network_kwargs(net: safe_pickle.NetworkStub, where: str) -> dict:
  """Effective G_paper arguments: defaults from the pickled source (or the known ones), then static_kwargs."""
  func = net.build_func_name
  if func not in SUPPORTED_BUILD_FUNCS:
    raise ConversionError(
      f'{where}: network {net.name!r} was built by {func!r}; only PGGAN generators '
      f'({", ".join(SUPPORTED_BUILD_FUNCS)}) are supported'
    )
  kwargs = dict(G_PAPER_DEFAULTS)
  kwargs.update(function_defaults(net.build_module_src, func) or {})
  kwargs.update(net.static_kwargs)
  return kwargs


def config_from_kwargs(kw: dict, where: str) -> pggan.GeneratorConfig:
  """G_paper arguments -> GeneratorConfig; refuses variants this implementation does not compute."""
  refuse = []
  if int(kw.get('label_size') or 0) > 0:
    refuse.append(f'label_size={kw["label_size"]} (conditional generator)')
  for flag in ('use_wscale', 'normalize_latents', 'use_pixelnorm', 'use_leakyrelu'):
    if not kw.get(flag, True):
      refuse.append(f'{flag}=False')
  if float(kw.get('fmap_decay', 1.0)) != 1.0:
    refuse.append(f'fmap_decay={kw["fmap_decay"]}')
  if not math.isclose(float(kw.get('pixelnorm_epsilon', 1e-8)), 1e-8):
    refuse.append(f'pixelnorm_epsilon={kw["pixelnorm_epsilon"]}')
  if kw.get('structure') not in (None, 'linear', 'recursive'):
    refuse.append(f'structure={kw["structure"]!r}')
  if refuse:
    raise ConversionError(
      f'{where}: unsupported generator variant: {", ".join(refuse)} (only the official '
      'unconditional PGGAN with equalized LR, pixel norm and leaky ReLU is implemented)'
    )
  fmap_base, fmap_max = int(kw['fmap_base']), int(kw['fmap_max'])
  latent = kw.get('latent_size')
  z_dim = int(latent) if latent is not None else min(fmap_base, fmap_max)
  fused = kw.get('fused_scale', True)
  if fused not in (True, False, 'auto'):
    raise ConversionError(f'{where}: unsupported fused_scale={fused!r}')
  try:
    return pggan.GeneratorConfig(
      resolution=int(kw['resolution']),
      z_dim=z_dim,
      fmaps_base=2 * fmap_base,
      fmaps_max=fmap_max,
      num_channels=int(kw['num_channels']),
      fused_scale=fused if isinstance(fused, str) else bool(fused),
    )
  except ValueError as e:
    raise ConversionError(f'{where}: {e}') from None


def rules(config: pggan.GeneratorConfig) -> tuple[list[Rule], list[Ignored]]:
  """The name map: one explicit transform per TF variable of a ``config`` generator."""
  out: list[Rule] = []
  ignored = [Ignored('lod', (), 'progressive-growing level; checked to be 0')]
  table = pggan.layer_table(config)
  for spec in table:
    name = f'{spec.block}/{spec.name}'
    if spec.name == 'Dense':
      out.append(
        Rule(
          f'{name}/weight',
          (spec.in_channels, 16 * spec.out_channels),
          f'{name}/weight',
          common.identity,
          'TF layout kept',
        )
      )
    elif spec.name == 'Conv0_up':
      out.append(
        Rule(
          f'{name}/weight',
          (3, 3, spec.out_channels, spec.in_channels),
          f'{name}/weight',
          lambda w: w.transpose(0, 1, 3, 2),
          '[k,k,out,in] -> [k,k,in,out]',
        )
      )
    else:
      out.append(
        Rule(
          f'{name}/weight',
          (3, 3, spec.in_channels, spec.out_channels),
          f'{name}/weight',
          common.identity,
          'HWIO kept',
        )
      )
    out.append(Rule(f'{name}/bias', (spec.out_channels,), f'{name}/bias', common.identity))
  c = config.num_channels
  for b in range(len(table) // 2):
    lod = len(table) // 2 - 1 - b
    nf = table[2 * b + 1].out_channels
    if lod == 0:
      out.append(Rule('ToRGB_lod0/weight', (1, 1, nf, c), 'ToRGB/weight', common.identity))
      out.append(Rule('ToRGB_lod0/bias', (c,), 'ToRGB/bias', common.identity))
    else:
      why = f'ToRGB of {4 * 2**b}x{4 * 2**b}, unused by a fully grown generator'
      ignored += [
        Ignored(f'ToRGB_lod{lod}/weight', (1, 1, nf, c), why),
        Ignored(f'ToRGB_lod{lod}/bias', (c,), why),
      ]
  return out, ignored


def convert_network(net: safe_pickle.NetworkStub, where: str) -> tuple[pggan.GeneratorConfig, dict, dict]:
  """Gs stub -> (GeneratorConfig, params, kwargs used)."""
  kwargs = network_kwargs(net, where)
  config = config_from_kwargs(kwargs, where)
  variables = {}
  for item in net.variables:
    if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
      raise ConversionError(
        f'{where}: malformed variables entry {type(item).__name__} (expected (name, array))'
      )
    name, value = item
    if name in variables:
      raise ConversionError(f'{where}: duplicate variable {name!r}')
    variables[name] = np.asarray(value)
  lod = variables.get('lod')
  if lod is not None and np.size(lod) == 1 and float(np.reshape(lod, ())) != 0.0:
    raise ConversionError(
      f'{where}: lod = {float(np.reshape(lod, ()))}: this generator is in the middle of '
      'progressive growing; only fully grown generators (lod = 0) are supported'
    )
  rule_list, ignored = rules(config)
  try:
    params = common.apply_rules(variables, rule_list, ignored, config, f'{where} (network {net.name!r})')
  except ConversionError as e:
    raise ConversionError(f'{e} [architecture read from static_kwargs: {config}]') from None
  return config, params, kwargs


def convert(path: str | os.PathLike, **config_overrides) -> tuple[pggan.GeneratorConfig, dict]:
  """Reads an official TF pickle and converts its Gs (see module docstring)."""
  where = os.fspath(path)
  net = select_gs(load_networks(path), where)
  config, params, _ = convert_network(net, where)
  config = common.check_config_override(config, config_overrides, where)
  return config, params
