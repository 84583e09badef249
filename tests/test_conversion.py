"""Conversion parity: independent PyTorch reference -> .pth / TF pickle -> launch.convert -> Flax PGGAN."""

import builtins
import os
import pathlib
import pickle
import pickletools
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from pmsfc_jax.io import checkpoints
from pmsfc_jax.models import pggan
from tests import torch_util
from tests.cli_util import run_cli_in_process
from weights_conversion import common
from weights_conversion import convert
from weights_conversion import mganprior_pth

if torch_util.HAS_TORCH:  # the reference model; without torch the tests that need it skip (torch_util)
  import torch

  from tests import reference_pggan_torch as ref
from weights_conversion import nvidia_tf_pkl
from weights_conversion import safe_pickle

REPO = pathlib.Path(__file__).resolve().parents[1]
TOL = 1e-4

# (resolution, z_dim, fmaps_base, fmaps_max, fused_scale): narrow channels so 256x256 stays fast.
# With random N(0, 1) weights each layer amplifies float32 rounding ~1.5x, and more with very few channels
# (pixel norm over 4 channels): at 256x256 with 4 channels torch and JAX both drift ~2e-4 from a float64
# run. So the float32 1e-4 parity uses >= 16 channels at 256, and the narrow model is checked in float64.
ARCHS = {
  'res16': (16, 32, 256, 32, False),
  'res32': (32, 48, 512, 32, False),
  'res64': (64, 32, 512, 16, False),
  'res256_auto': (256, 32, 4096, 16, 'auto'),
  'res32_fused': (32, 32, 512, 32, True),
  'res16_fused': (16, 24, 256, 16, True),
}


def _latents(z_dim, n=3, seed=1):
  return np.random.default_rng(seed).standard_normal((n, z_dim)).astype(np.float32)


def _save_pth(model, path):
  torch.save(model.state_dict(), path)
  return path


def _run_convert_cli(argv):
  """Runs launch.convert's main in-process with these flags (as `python -m launch.convert ...`)."""
  from launch import convert as convert_cli

  run_cli_in_process(convert_cli.main, argv)


def _max_err(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@torch_util.needs_torch
@pytest.mark.parametrize('arch', sorted(ARCHS))
def test_pth_conversion_matches_reference_images_and_every_layer(arch, tmp_path):
  res, z_dim, base, fmax, fused = ARCHS[arch]
  model = ref.random_model(res, z_dim, base, fmax, fused)
  src = _save_pth(model, tmp_path / 'pggan_generator.pth')
  _run_convert_cli([f'--source={src}', f'--output={tmp_path / "ckpt"}'])
  gen = checkpoints.load_generator(tmp_path / 'ckpt')

  cfg = gen.config
  assert (cfg.resolution, cfg.z_dim, cfg.fused_scale) == (res, z_dim, fused)
  assert [l.out_channels for l in pggan.layer_table(cfg)] == [
    l.out_channels for l in pggan.layer_table(pggan.GeneratorConfig(res, z_dim, base, fmax))
  ]

  z = _latents(z_dim)
  want_img, want_feats = ref.run(model, z)
  got_img = np.asarray(gen(z))
  assert got_img.shape == (3, res, res, 3)
  assert _max_err(got_img, want_img) <= TOL
  assert float(np.std(want_img)) > 0.05  # a meaningful comparison, not two zero images
  assert sorted(want_feats) == list(range(1, cfg.num_layers + 1))
  for layer, want in want_feats.items():
    got = np.asarray(gen.g1(z, layer))
    assert got.shape == want.shape == (3, *pggan.feature_shape(cfg, layer))
    assert _max_err(got, want) <= TOL, f'layer {layer}'
  # G2 started from the reference's own features reproduces the reference image (every layer: test_pggan).
  for layer in sorted({1, 3, cfg.num_layers}):
    assert _max_err(gen.g2(want_feats[layer], layer), want_img) <= TOL, f'G2 at layer {layer}'


@torch_util.needs_torch
@pytest.mark.parametrize('arch', [(128, 32, 512, 16, 'auto'), (64, 32, 512, 16, True)])
def test_float64_parity_narrow_channels(arch):
  """Converted params run in float64 match the float64 reference to 1e-9: differences are pure rounding."""
  res, z_dim, base, fmax, fused = arch
  model = ref.random_model(res, z_dim, base, fmax, fused).double()
  state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  cfg, params = mganprior_pth.convert_state_dict(state)
  z = _latents(z_dim, n=1).astype(np.float64)
  with torch.no_grad():
    img, feats = model(torch.from_numpy(z))
  with jax.enable_x64(True):
    params64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    got = pggan.generate(cfg, params64, z)
    assert got.dtype == np.float64
    assert _max_err(got, img.permute(0, 2, 3, 1).numpy()) <= 1e-9
    for layer in range(1, cfg.num_layers + 1):
      want = feats[layer - 1].permute(0, 2, 3, 1).numpy()
      assert _max_err(pggan.g1(cfg, params64, z, layer), want) <= 1e-9, f'layer {layer}'


@torch_util.needs_torch
def test_convert_cli_detects_format_and_refuses_overwrite(tmp_path):
  model = ref.random_model(16, 32, 256, 32)
  src = _save_pth(model, tmp_path / 'weights.bin')  # no extension: detected from the zip magic
  out = tmp_path / 'converted'
  _run_convert_cli([f'--source={src}', f'--output={out}'])
  gen = checkpoints.load_generator(out)
  z = _latents(32)
  assert _max_err(gen(z), ref.run(model, z)[0]) <= TOL
  with pytest.raises(Exception, match='exist'):  # no silent overwrite without --force
    _run_convert_cli([f'--source={src}', f'--output={out}'])
  _run_convert_cli([f'--source={src}', f'--output={out}', '--force', '--source_format=mganprior_pth'])


# ------------------------------------------------------------------------------------------------
# Official TF pickle layout, built in the test with its own (independent) pth -> TF transforms.


class FakeTfNetwork:
  """Pickles exactly like progressive_growing_of_gans' tfutil.Network (a global + its state dict)."""

  def __init__(self, state):
    self._state = state

  def __getstate__(self):
    return self._state


FakeTfNetwork.__module__ = 'tfutil'
FakeTfNetwork.__qualname__ = FakeTfNetwork.__name__ = 'Network'

NETWORKS_PY = """
import numpy as np
import tensorflow as tf
def G_paper(latents_in, labels_in, num_channels=1, resolution=32, label_size=0, fmap_base=8192,
            fmap_decay=1.0, fmap_max=512, latent_size=None, normalize_latents=True, use_wscale=True,
            use_pixelnorm=True, pixelnorm_epsilon=1e-8, use_leakyrelu=True, dtype='float32',
            fused_scale=True, structure=None, is_template_graph=False, **kwargs):
    pass
"""


def tf_variables_from_torch(state_dict, resolution):
  """The official TF variable list of a generator, from a reference state dict (test-side transforms)."""
  sd = {k: v.detach().numpy().astype(np.float32) for k, v in state_dict.items()}
  num_blocks = int(np.log2(resolution)) - 1
  out = [('lod', np.float32(0.0))]
  w0 = sd['layer0.conv.weight']  # [nf, z, 4, 4]; out[o, y, x] = sum_i w0[o, i, 3-y, 3-x] z[i]
  nf, z = w0.shape[:2]
  dense = np.zeros((z, nf * 16), np.float32)
  for o in range(nf):
    for y in range(4):
      for x in range(4):
        dense[:, o * 16 + y * 4 + x] = w0[o, :, 3 - y, 3 - x]
  out += [('4x4/Dense/weight', dense), ('4x4/Dense/bias', sd['layer0.wscale.bias'])]
  out += [
    ('4x4/Conv/weight', np.transpose(sd['layer1.conv.weight'], (2, 3, 1, 0))),
    ('4x4/Conv/bias', sd['layer1.wscale.bias']),
  ]
  for b in range(1, num_blocks):
    r = 4 * 2**b
    if f'layer{2 * b}.weight' in sd:  # [k, k, in, out] -> TF upscale2d_conv2d's [k, k, out, in]
      out += [
        (f'{r}x{r}/Conv0_up/weight', np.transpose(sd[f'layer{2 * b}.weight'], (0, 1, 3, 2))),
        (f'{r}x{r}/Conv0_up/bias', sd[f'layer{2 * b}.wscale.bias']),
      ]
    else:
      out += [
        (f'{r}x{r}/Conv0/weight', np.transpose(sd[f'layer{2 * b}.conv.weight'], (2, 3, 1, 0))),
        (f'{r}x{r}/Conv0/bias', sd[f'layer{2 * b}.wscale.bias']),
      ]
    out += [
      (f'{r}x{r}/Conv1/weight', np.transpose(sd[f'layer{2 * b + 1}.conv.weight'], (2, 3, 1, 0))),
      (f'{r}x{r}/Conv1/bias', sd[f'layer{2 * b + 1}.wscale.bias']),
    ]
  for b in range(num_blocks):
    lod = num_blocks - 1 - b
    out += [
      (f'ToRGB_lod{lod}/weight', np.transpose(sd[f'output{b}.conv.weight'], (2, 3, 1, 0))),
      (f'ToRGB_lod{lod}/bias', sd[f'output{b}.wscale.bias']),
    ]
  return out


def _network_state(name, variables, static_kwargs, src=NETWORKS_PY, func='G_paper'):
  return {
    'version': 2,
    'name': name,
    'static_kwargs': static_kwargs,
    'build_module_src': src,
    'build_func_name': func,
    'variables': variables,
  }


def _dump_tf_pickle(path, networks, protocol, module='tfutil', monkeypatch=None):
  parts = module.split('.')
  for i in range(1, len(parts) + 1):  # 'dnnlib', 'dnnlib.tflib', 'dnnlib.tflib.network'
    monkeypatch.setitem(sys.modules, '.'.join(parts[:i]), types.ModuleType('.'.join(parts[:i])))
  mod = sys.modules[module]
  mod.Network = FakeTfNetwork
  FakeTfNetwork.__module__ = module
  try:
    data = pickle.dumps(networks, protocol=protocol)
  finally:
    FakeTfNetwork.__module__ = 'tfutil'
  path.write_bytes(data)
  return data


def _globals_in(data):
  """The (module, name) globals a pickle references (GLOBAL and STACK_GLOBAL opcodes)."""
  found, strings = set(), []
  for op, arg, _ in pickletools.genops(data):
    if op.name == 'GLOBAL':
      found.add(tuple(arg.split(' ', 1)))
    elif op.name in ('SHORT_BINUNICODE', 'BINUNICODE', 'UNICODE'):
      strings.append(arg)
    elif op.name == 'STACK_GLOBAL':
      found.add((strings[-2], strings[-1]))
  return found


def _static_kwargs(res, z_dim, base, fmax, fused):
  kw = dict(
    num_channels=3, resolution=res, label_size=0, fmap_base=base // 2, fmap_max=fmax, latent_size=z_dim
  )
  if fused is not True:  # fused_scale=True is G_paper's default: read from the pickled source.
    kw['fused_scale'] = fused
  return kw


@torch_util.needs_torch
@pytest.mark.parametrize(
  'arch,protocol,module',
  [
    ('res32', 4, 'tfutil'),
    ('res32_fused', 2, 'tfutil'),
    ('res256_auto', 4, 'tfutil'),
    ('res16', 5, 'dnnlib.tflib.network'),
  ],
)
def test_tf_pickle_converts_to_same_images_as_pth(arch, protocol, module, tmp_path, monkeypatch):
  res, z_dim, base, fmax, fused = ARCHS[arch]
  model = ref.random_model(res, z_dim, base, fmax, fused)
  gs_vars = tf_variables_from_torch(model.state_dict(), res)
  other = ref.random_model(res, z_dim, base, fmax, fused, seed=7)  # G (non-averaged): must not be used
  g_vars = tf_variables_from_torch(other.state_dict(), res)
  d = FakeTfNetwork(
    _network_state('D', [('4x4/Conv/weight', np.ones((3, 3, 4, 4), np.float32))], {}, func='D_paper')
  )
  kw = _static_kwargs(res, z_dim, base, fmax, fused)
  nets = (FakeTfNetwork(_network_state('G', g_vars, kw)), d, FakeTfNetwork(_network_state('Gs', gs_vars, kw)))
  src = tmp_path / 'karras2018iclr-test.pkl'
  data = _dump_tf_pickle(src, nets, protocol, module, monkeypatch)
  assert (module, 'Network') in _globals_in(data)

  _run_convert_cli([f'--source={src}', f'--output={tmp_path / "from_pkl"}'])
  _save_pth(model, tmp_path / 'same.pth')
  _run_convert_cli([f'--source={tmp_path / "same.pth"}', f'--output={tmp_path / "from_pth"}'])
  from_pkl = checkpoints.load_generator(tmp_path / 'from_pkl')
  from_pth = checkpoints.load_generator(tmp_path / 'from_pth')
  assert from_pkl.config.fused_scale == fused
  z = _latents(z_dim)
  img_pkl = np.asarray(from_pkl(z))
  assert _max_err(img_pkl, from_pth(z)) <= 1e-6
  assert _max_err(img_pkl, ref.run(model, z)[0]) <= TOL


# ------------------------------------------------------------------------------------------------
# Untrusted pickles.


class _Payload:
  def __init__(self, func, arg):
    self.func, self.arg = func, arg

  def __reduce__(self):
    return (self.func, (self.arg,))


@pytest.mark.parametrize(
  'func,command,global_name',
  [
    (os.system, 'touch {marker}', f'{os.system.__module__}.system'),
    (builtins.eval, "open({marker!r}, 'w').close()", 'builtins.eval'),
    (subprocess.getoutput, 'touch {marker}', 'subprocess.getoutput'),
    (np.load, '{marker}', 'numpy.load'),  # numpy is not admitted wholesale
  ],
)
def test_malicious_pickle_refused_and_never_runs(func, command, global_name, tmp_path, monkeypatch):
  marker = tmp_path / 'pwned'
  payload = _Payload(func, command.format(marker=str(marker)))
  state = _network_state('Gs', [('lod', np.float32(0)), ('4x4/Dense/weight', payload)], {'resolution': 8})
  src = tmp_path / 'evil.pkl'
  _dump_tf_pickle(src, (None, None, FakeTfNetwork(state)), 4, 'tfutil', monkeypatch)
  with pytest.raises(safe_pickle.UnsafePickleError, match=f'refused to load global {global_name}'):
    convert.convert_file(src)
  with pytest.raises(safe_pickle.UnsafePickleError, match='nothing was executed'):
    _run_convert_cli([f'--source={src}', f'--output={tmp_path / "out"}'])
  assert not marker.exists()
  assert not (tmp_path / 'out').exists()
  if func is not np.load:
    pickle.loads(src.read_bytes())  # Sanity: unpickled without restrictions, the payload really runs.
    assert marker.exists()


def test_legacy_theano_pickle_refused(tmp_path, monkeypatch):
  src = tmp_path / 'karras2018iclr-celebahq-1024x1024-theano.pkl'
  _dump_tf_pickle(src, (FakeTfNetwork({'build_func_spec': {}}),), 2, 'network', monkeypatch)
  with pytest.raises(safe_pickle.LegacyPickleError, match=r'network\.Network.*legacy Theano-era'):
    convert.convert_file(src)


# ------------------------------------------------------------------------------------------------
# Missing / extra / misshaped keys.


def _sd16():
  return {k: v.detach().numpy().copy() for k, v in ref.random_model(16, 32, 256, 32).state_dict().items()}


@torch_util.needs_torch
@pytest.mark.parametrize(
  'edit,key,message',
  [
    ('missing', 'layer3.conv.weight', r"missing key 'layer3\.conv\.weight'"),
    ('missing', 'layer4.wscale.bias', r"missing key 'layer4\.wscale\.bias'"),
    ('missing', 'output0.conv.weight', r"missing key 'output0\.conv\.weight'"),
    ('missing', 'output2.wscale.bias', r"missing key 'output2\.wscale\.bias'"),
    ('missing', 'lod', r"missing key 'lod'"),
    ('extra', 'layer1.conv.bias', r"unexpected key 'layer1\.conv\.bias'"),
    ('extra', 'layer9.conv.weight', r"unexpected key 'layer9\.conv\.weight'"),
    ('extra', 'mapping.fc.weight', r"unexpected key 'mapping\.fc\.weight'"),
    ('misshaped', 'layer2.wscale.bias', r"key 'layer2\.wscale\.bias' has shape \(33,\), expected \(32,\)"),
    (
      'misshaped',
      'layer5.conv.weight',
      r"key 'layer5\.conv\.weight' has shape \(16, 16, 5, 5\), expected "
      r'\(16, 16, 3, 3\)',
    ),
    ('misshaped', 'output1.conv.weight', r"key 'output1\.conv\.weight' has shape"),
    ('misshaped', 'layer0.conv.weight', r"key 'layer0\.conv\.weight' has shape \(32, 32, 3, 3\)"),
  ],
)
def test_pth_bad_keys_named(edit, key, message, tmp_path):
  sd = _sd16()
  if edit == 'missing':
    del sd[key]
  elif edit == 'extra':
    sd[key] = np.zeros((4, 4), np.float32)
  else:
    shape = {
      'layer2.wscale.bias': (33,),
      'layer5.conv.weight': (16, 16, 5, 5),
      'output1.conv.weight': (3, 31, 1, 1),
      'layer0.conv.weight': (32, 32, 3, 3),
    }[key]
    sd[key] = np.zeros(shape, np.float32)
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / 'bad.pth')
  with pytest.raises(common.ConversionError, match=message):
    convert.convert_file(tmp_path / 'bad.pth')


def _tf_vars16():
  return dict(tf_variables_from_torch(ref.random_model(16, 32, 256, 32).state_dict(), 16))


@torch_util.needs_torch
@pytest.mark.parametrize(
  'edit,key,message',
  [
    ('missing', '8x8/Conv1/bias', r"missing key '8x8/Conv1/bias'"),
    ('missing', 'ToRGB_lod2/weight', r"missing key 'ToRGB_lod2/weight'"),
    ('extra', '32x32/Conv0/weight', r"unexpected key '32x32/Conv0/weight'"),
    ('misshaped', '4x4/Dense/weight', r"key '4x4/Dense/weight' has shape \(32, 500\), expected \(32, 512\)"),
    ('misshaped', 'ToRGB_lod0/weight', r"key 'ToRGB_lod0/weight' has shape \(1, 1, 16, 4\)"),
    ('renamed', '16x16/Conv0/weight', r"missing key '16x16/Conv0/weight'"),
  ],
)
def test_tf_bad_keys_named(edit, key, message, tmp_path, monkeypatch):
  variables = _tf_vars16()
  if edit == 'missing':
    del variables[key]
  elif edit == 'extra':
    variables[key] = np.zeros((3, 3, 16, 8), np.float32)
  elif edit == 'renamed':  # static_kwargs say fused_scale=False but the file holds fused (Conv0_up) weights.
    variables['16x16/Conv0_up/weight'] = variables.pop(key)
  else:
    variables[key] = np.zeros(
      {'4x4/Dense/weight': (32, 500), 'ToRGB_lod0/weight': (1, 1, 16, 4)}[key], np.float32
    )
  kw = _static_kwargs(16, 32, 256, 32, False)
  state = _network_state('Gs', list(variables.items()), kw)
  _dump_tf_pickle(tmp_path / 'bad.pkl', (None, None, FakeTfNetwork(state)), 4, 'tfutil', monkeypatch)
  with pytest.raises(common.ConversionError, match=message):
    convert.convert_file(tmp_path / 'bad.pkl')


@torch_util.needs_torch
@pytest.mark.parametrize(
  'kwargs,message',
  [
    ({'label_size': 10}, r'label_size=10 \(conditional generator\)'),
    ({'use_wscale': False}, 'use_wscale=False'),
    ({'normalize_latents': False}, 'normalize_latents=False'),
    ({'use_pixelnorm': False}, 'use_pixelnorm=False'),
  ],
)
def test_tf_unsupported_variants_refused(kwargs, message, tmp_path, monkeypatch):
  kw = {**_static_kwargs(16, 32, 256, 32, False), **kwargs}
  state = _network_state('Gs', list(_tf_vars16().items()), kw)
  _dump_tf_pickle(tmp_path / 'v.pkl', (None, None, FakeTfNetwork(state)), 4, 'tfutil', monkeypatch)
  with pytest.raises(common.ConversionError, match=message):
    convert.convert_file(tmp_path / 'v.pkl')


@torch_util.needs_torch
def test_mid_growth_lod_refused(tmp_path, monkeypatch):
  sd = _sd16()
  sd['lod'] = np.float32(1.5)
  torch.save({k: torch.as_tensor(v) for k, v in sd.items()}, tmp_path / 'grow.pth')
  with pytest.raises(common.ConversionError, match=r'lod = 1\.5.*middle of progressive growing'):
    convert.convert_file(tmp_path / 'grow.pth')
  variables = _tf_vars16()
  variables['lod'] = np.float32(2.0)
  state = _network_state('Gs', list(variables.items()), _static_kwargs(16, 32, 256, 32, False))
  _dump_tf_pickle(tmp_path / 'grow.pkl', (None, None, FakeTfNetwork(state)), 4, 'tfutil', monkeypatch)
  with pytest.raises(common.ConversionError, match=r'lod = 2\.0'):
    convert.convert_file(tmp_path / 'grow.pkl')


@torch_util.needs_torch
def test_explicit_config_flags_checked(tmp_path):
  src = _save_pth(ref.random_model(16, 32, 256, 32), tmp_path / 'g.pth')
  with pytest.raises(common.ConversionError, match=r'resolution=32 but the checkpoint has 16'):
    convert.convert_file(src, resolution=32)
  with pytest.raises(common.ConversionError, match=r'fused_scale=True but the checkpoint has False'):
    convert.convert_file(src, fused_scale=True)
  with pytest.raises(common.ConversionError, match=r'fmaps_base=512, fmaps_max=32 give channels'):
    convert.convert_file(src, fmaps_base=512)
  config, _, meta = convert.convert_file(src, resolution=16, z_dim=32, fmaps_base=256, fmaps_max=32)
  assert config == pggan.GeneratorConfig(16, 32, 256, 32)
  assert meta['format'] == 'mganprior_pth' and meta['source_name'] == 'g.pth' and len(meta['sha256']) == 64


@torch_util.needs_torch
def test_inconsistent_channels_refused():
  sd = _sd16()
  sd['layer3.conv.weight'] = np.zeros((8, 32, 3, 3), np.float32)  # 8x8 narrower than 16x16
  with pytest.raises(common.ConversionError, match=r'channel counts per resolution \{4: 32, 8: 8, 16: 16\}'):
    mganprior_pth.convert_state_dict(sd)


@pytest.mark.parametrize(
  'content,expected',
  [
    (b'PK\x03\x04rest', 'mganprior_pth'),
    (b'\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19rest', 'mganprior_pth'),
    (b'\x80\x04\x95rest', 'nvidia_tf_pkl'),
  ],
)
def test_detect_format_by_magic(content, expected, tmp_path):
  (tmp_path / 'weights').write_bytes(content)
  assert convert.detect_format(tmp_path / 'weights') == expected


def test_detect_format_unknown_and_directory(tmp_path):
  (tmp_path / 'weights').write_bytes(b'GIF89a')
  with pytest.raises(common.ConversionError, match='--source_format'):
    convert.convert_file(tmp_path / 'weights')
  with pytest.raises(common.ConversionError, match='is a directory'):
    convert.convert_file(tmp_path)


def test_function_defaults_parsed_not_executed():
  src = NETWORKS_PY + '\nraise SystemExit("executed")\n'
  defaults = nvidia_tf_pkl.function_defaults(src, 'G_paper')
  assert defaults['fused_scale'] is True and defaults['fmap_base'] == 8192 and defaults['latent_size'] is None
