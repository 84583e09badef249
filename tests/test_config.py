"""The config schema (core/config.py, core/schema.py) and the paper's presets (core/presets.py)."""

import dataclasses
import logging

import ml_collections
import pytest

from pmsfc_jax.core import config
from pmsfc_jax.core import discovery_config
from pmsfc_jax.core import gan
from pmsfc_jax.core import presets


def test_invert_presets():
  c = presets.invert()
  assert (
    c.method.name,
    c.task.name,
    c.model.layer,
    c.method.num_codes,
    c.optim.optimizer,
    c.optim.lr,
    c.optim.iterations,
  ) == ('pmsfc', 'reconstruct', 3, 5, 'adam', 1e-4, 7000)
  assert c == config.InvertConfig()
  m = presets.invert('mganprior,inpaint')
  assert (m.optim.optimizer, m.optim.lr, m.optim.iterations, m.loss.perceptual_weight) == (
    'sgd',
    1.0,
    3000,
    0.1,
  )
  assert (m.method.num_codes, m.method.init, m.optim.momentum, m.loss.pixel_mean) == (
    30,
    'normal',
    0.0,
    'all',
  )
  sr = presets.invert('pmsfc,super_resolve')
  assert (sr.task.factor, sr.task.downsample) == (16, 'bilinear')
  f = presets.invert('fast')
  assert (f.optim.optimizer, f.optim.lr, f.optim.iterations, f.optim.schedule) == (
    'adam',
    0.03,
    1000,
    'constant',
  )
  # Super-resolution stops where the convergence sweep's PSNR stops rising (presets.FAST_SR_ITERATIONS).
  for method in ('pmsfc', 'mganprior'):
    fsr = presets.invert(f'{method},super_resolve,fast')
    assert (fsr.optim.lr, fsr.optim.iterations) == (0.03, presets.FAST_SR_ITERATIONS) == (0.03, 400)
    assert _differences(presets.invert(f'{method},fast'), fsr) == ['optim.iterations', 'task.name']
  assert presets.invert('super_resolve,local').optim.iterations == 50
  assert presets.invert('local').loss.perceptual.resize is None
  assert presets.invert('super_resolve,local').task.factor == 4
  with pytest.raises(ValueError, match=r"unknown invert config preset\(s\) \['pmsfcc'\]"):
    presets.invert('pmsfcc')
  p = c.loss.perceptual
  assert (p.layer, p.resize, p.feature_scale) == ('relu3_3', 256, 0.001)


def _differences(a, b, prefix=''):
  """Dotted paths of the leaves where two configs differ."""
  out = []
  for f in dataclasses.fields(a):
    x, y = getattr(a, f.name), getattr(b, f.name)
    if dataclasses.is_dataclass(x):
      out += _differences(x, y, f'{prefix}{f.name}.')
    elif x != y:
      out.append(prefix + f.name)
  return out


@pytest.mark.parametrize('task', config.TASKS)
def test_paper_preset_is_the_paper_and_differs_from_the_default_only_in_eq9(task):
  p = presets.invert(f'paper,{task}')
  assert (p.method.name, p.model.layer, p.method.num_codes) == ('pmsfc', 3, 5)
  assert (p.optim.optimizer, p.optim.lr, p.optim.b1, p.optim.b2, p.optim.iterations) == (
    'adam',
    1e-4,
    0.9,
    0.999,
    7000,
  )
  assert (p.loss.degraded_perceptual, p.loss.pixel_mean) == (False, 'all')
  # The documented deviation of the default: the VGG term on the degraded tasks; nothing else differs.
  assert _differences(presets.invert(task), p) == ['loss.degraded_perceptual', 'loss.pixel_mean']
  assert _differences(presets.invert(task), presets.invert(f'{task},eq9')) == ['loss.degraded_perceptual']
  for clash in ('mganprior', 'fast', 'local'):
    with pytest.raises(ValueError, match=rf"preset 'paper' .* cannot be combined with \['{clash}'\]"):
      presets.invert(f'paper,{task},{clash}')


def test_mganprior_preset_follows_its_scripts_per_task():
  # genforce/mganprior: multi_code_inversion.py:99, inpainting.py:111, colorization.py:115,
  # super_resolution.py:112 (argparse defaults of --iterations).
  want = {'reconstruct': 3000, 'inpaint': 3000, 'colorize': 1500, 'super_resolve': 2000}
  got = {t: presets.invert(f'mganprior,{t}').optim.iterations for t in config.TASKS}
  assert got == want
  lambdas = {t: presets.invert(f'mganprior,{t}').loss.perceptual_weight for t in config.TASKS}
  assert lambdas == {'reconstruct': 1.0, 'inpaint': 0.1, 'colorize': 1.0, 'super_resolve': 1.0}


def test_reproduce_rows():
  cfg = presets.reproduce()
  assert cfg.reproduce.rows == config.REPRODUCE_ROWS[:5]  # row 6 runs only when asked for
  rows = {r: presets.reproduce_row(cfg, r, 'colorize') for r in config.REPRODUCE_ROWS}
  assert _differences(rows['pmsfc_paper'], rows['pmsfc_paper_full']) == ['optim.iterations']
  assert (
    rows['pmsfc_paper_full'].optim.iterations
    == presets.invert('pmsfc,colorize,paper').optim.iterations
    == 7000
  )
  one, two = rows['mganprior'], rows['pmsfc_paper']
  assert (one.method.name, one.method.num_codes, one.optim.optimizer, one.optim.lr) == (
    'mganprior',
    30,
    'sgd',
    1.0,
  )
  assert (two.method.name, two.method.num_codes, two.optim.optimizer, two.optim.lr) == (
    'pmsfc',
    5,
    'adam',
    1e-4,
  )
  assert one.optim.iterations == two.optim.iterations == 1500  # equal iterations: mGANprior's colorization
  assert (one.loss.degraded_perceptual, two.loss.degraded_perceptual) == (True, False)
  assert _differences(rows['mganprior_fast'], rows['pmsfc_fast']) == ['method.name', 'method.num_codes']
  assert _differences(rows['pmsfc_fast'], rows['pmsfc_fast_eq9']) == ['loss.degraded_perceptual']
  fast = rows['pmsfc_fast']
  assert (fast.optim.optimizer, fast.optim.lr, fast.optim.iterations) == ('adam', 0.03, 150)
  for r in rows.values():  # every row keeps the reproduction's framing, model and perceptual network
    assert (r.task, r.model, r.loss.perceptual, r.job, r.seed) == (
      dataclasses.replace(cfg.task, name='colorize'),
      cfg.model,
      cfg.loss.perceptual,
      cfg.job,
      cfg.seed,
    )
  sr = presets.reproduce_row(cfg, 'pmsfc_paper', 'super_resolve')
  assert (sr.task.factor, sr.task.downsample, sr.optim.iterations) == (4, 'area', 2000)
  inpaint = {r: presets.reproduce_row(cfg, r, 'inpaint') for r in ('mganprior', 'mganprior_fast')}
  assert [(c.loss.perceptual_weight, c.loss.pixel_mean) for c in inpaint.values()] == [
    (0.1, 'all'),
    (0.1, 'known'),
  ]
  assert presets.reproduce_row(presets.reproduce('local'), 'mganprior', 'reconstruct').optim.iterations == 3
  with pytest.raises(config.ConfigError, match="unknown reproduction row 'pmsfc_slow'"):
    presets.reproduce_row(cfg, 'pmsfc_slow', 'reconstruct')


def test_result_settings_leave_out_loss_settings_the_task_does_not_read():
  keys = {t: set(config.result_settings(presets.invert(t))['loss']) for t in config.TASKS}
  assert 'pixel_mean' not in keys['reconstruct'] | keys['colorize'] and 'pixel_mean' in keys['inpaint']
  assert 'degraded_perceptual' not in keys['reconstruct'] and 'degraded_perceptual' in keys['colorize']
  with pytest.raises(config.ConfigError, match=r"config.loss.pixel_mean must be one of \('known', 'all'\)"):
    config.parse(config.InvertConfig, {'loss': {'pixel_mean': 'some'}})


def test_other_presets():
  d = presets.demo()
  assert (d.model.generator, d.optim.iterations, d.loss.perceptual.resize, d.job.lpips) == (
    'demo',
    300,
    64,
    True,
  )
  assert presets.demo('local').demo.generated_seeds == (0,)
  r = presets.reproduce('local')
  assert (r.task.factor, r.task.downsample, r.reproduce.num_images, r.optim.iterations) == (4, 'area', 4, 2)
  assert (r.job.images, r.task.mask) == ('', '')  # no default outside the repository (issue #14)
  assert presets.discover('local').optim.lr == 1e-3
  t = presets.train_pggan('local')
  assert (t.model.generator.fmaps_base, t.data.folder) == (1024, '')  # the faces are a required setting
  with pytest.raises(ValueError, match="unknown demo config variant 'big'"):
    presets.demo('big')
  with pytest.raises(ValueError, match="unknown config variant 'big'"):
    presets.train_pggan('big')


@pytest.mark.parametrize(
  'cls, preset',
  [
    (config.InvertConfig, presets.invert('mganprior,inpaint,local')),
    (config.DemoConfig, presets.demo('local')),
    (config.ReproduceConfig, presets.reproduce()),
    (discovery_config.DiscoverConfig, presets.discover()),
    (gan.TrainConfig, presets.train_pggan()),
  ],
)
def test_config_dict_roundtrip_and_hashable(cls, preset):
  cd = config.to_config_dict(preset)
  assert isinstance(cd, ml_collections.ConfigDict)
  assert config.parse(cls, cd) == preset
  assert config.parse(cls, cd.to_dict()) == preset
  assert config.parse(cls, preset) is preset
  assert hash(preset) == hash(config.parse(cls, cd))  # usable as a jit static argument


def test_parse_checks_types_and_names_unknown_keys():
  assert config.parse(config.InvertConfig, {'optim': {'lr': 1}}).optim.lr == 1.0  # int -> float
  with pytest.raises(config.ConfigError, match=r"unknown config key 'optim.lrr'; did you mean 'optim.lr'\?"):
    config.parse(config.InvertConfig, {'optim': {'lrr': 1.0}})
  with pytest.raises(config.ConfigError, match=r'config.method.num_codes must be int'):
    config.parse(config.InvertConfig, {'method': {'num_codes': 2.5}})
  with pytest.raises(config.ConfigError, match=r"config.optim.optimizer must be one of \('adam', 'sgd'\)"):
    config.parse(config.InvertConfig, {'optim': {'optimizer': 'lbfgs'}})
  with pytest.raises(config.ConfigError, match=r'unknown task'):
    config.parse(config.InvertConfig, {'task': {'name': 'deblur'}})
  with pytest.raises(ValueError, match=r'config.job.total_steps=5 must be a positive multiple'):
    config.parse(gan.TrainConfig, {'job': {'total_steps': 5, 'steps_per_call': 2}})
  assert (
    config.parse(config.InvertConfig, {'loss': {'perceptual': {'resize': 0}}}).loss.perceptual.resize is None
  )


def test_legacy_spellings_are_translated_with_a_warning(caplog):
  caplog.set_level(logging.WARNING)
  old = {
    'method': 'mganprior',
    'task': 'inpaint',
    'lr': 0.5,
    'adam_eps': 1e-6,
    'batch_size': 3,
    'perceptual': {'resize': None},
    'force': True,
    'optim': {'lr': 0.1},
  }
  c = config.parse(config.InvertConfig, old)
  assert (c.method.name, c.task.name, c.optim.lr, c.optim.eps, c.job.batch_size) == (
    'mganprior',
    'inpaint',
    0.5,
    1e-6,
    3,
  )
  assert c.loss.perceptual.resize is None and c.job.overwrite_config
  assert "config key 'lr' is deprecated: use 'optim.lr'" in caplog.text
  assert "config key 'perceptual.resize' is deprecated: use 'loss.perceptual.resize'" in caplog.text
  with pytest.raises(
    config.ConfigError, match="'num_subspaces' no longer exists: R is fixed by the subspace"
  ):
    config.parse(config.InvertConfig, {'num_subspaces': 6})
  assert config.parse(discovery_config.DiscoverConfig, {'lam': 1.0, 'log_every': 2}).optim.lam == 1.0
  t = config.parse(
    gan.TrainConfig, {'optim': {'learning_rate': 1e-3, 'beta1': 0.5}, 'model': {'fmaps_max': 64}}
  )
  assert (t.optim.lr, t.optim.b1, t.model.generator.fmaps_max) == (1e-3, 0.5, 64)
  assert config.parse(
    gan.TrainConfig, {'model': {'generator': {'fused_scale': 'auto'}}}
  ).model.generator.is_fused(128)
  assert config.override(presets.invert(), {'lr': 0.2, 'job.images': 'x'}).optim.lr == 0.2


def test_result_settings_follow_from_the_sections():
  c = presets.invert('pmsfc,colorize')
  r = config.result_settings(c)
  assert set(r) == {'model', 'method', 'optim', 'loss', 'task', 'seed'}  # not 'job'
  assert r['model'] == {'layer': 3, 'compute_dtype': 'float32'}  # files: contents count
  assert set(r['task']) == {'name', 'crop', 'align'}  # unused by colorize; align_template unused unaligned
  assert set(config.result_settings(presets.invert('super_resolve'))['task']) == {
    'name',
    'factor',
    'downsample',
    'crop',
    'align',
  }
  other_job = dataclasses.replace(c, job=dataclasses.replace(c.job, batch_size=1, output_dir='elsewhere'))
  assert config.result_settings(other_job) == r
