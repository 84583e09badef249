"""Issue 19: learning-rate schedules, the curve recorder (jobs/convergence.py), the random-partition
ablation, and reproduction rows recognised by their files' contents."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmsfc_jax.core import clustering
from pmsfc_jax.core import config
from pmsfc_jax.core import inversion
from pmsfc_jax.core import optimizers
from pmsfc_jax.core import presets
from pmsfc_jax.evaluation import metrics
from pmsfc_jax.jobs import convergence
from pmsfc_jax.jobs import plots
from pmsfc_jax.jobs import reproduce
from pmsfc_jax.jobs.invert import fingerprint
from tests import configs


def _reference_lr(schedule: str, lr: float, t: int, total: int, warmup_fraction: float) -> float:
  """The schedules written out (independent of optax): cosine from lr to 0 over ``total`` steps; warmup:
  linear 0 -> lr over round(fraction * total) steps, then cosine to 0 over the remaining steps."""
  if schedule == 'constant':
    return lr
  w = round(warmup_fraction * total) if schedule == 'warmup_cosine' else 0
  if t < w:
    return lr * t / w
  return lr * 0.5 * (1 + math.cos(math.pi * min(t - w, total - w) / (total - w)))


@pytest.mark.parametrize('optimizer', ['sgd', 'adam'])
@pytest.mark.parametrize('schedule', ['constant', 'cosine', 'warmup_cosine'])
def test_schedule_learning_rates_equal_optax_and_the_formula(optimizer, schedule):
  cfg = configs.invert(
    'pmsfc',
    optimizer=optimizer,
    lr=0.4,
    iterations=20,
    **{'optim.schedule': schedule, 'optim.warmup_fraction': 0.2},
  )
  opt = optimizers.make_optimizer(cfg)
  params = {'x': jnp.zeros(())}
  state = opt.init(params)
  optax_lr = optimizers.learning_rate(cfg.optim)
  for t in range(22):  # past the end: the schedule stays at 0
    # A gradient of 1: SGD's update is -lr(t); Adam's first-moment / second-moment ratio is 1 for a
    # constant gradient (up to eps), so its update is -lr(t) too.
    updates, state = opt.update({'x': jnp.ones(())}, state, params)
    want = _reference_lr(schedule, 0.4, t, 20, 0.2)
    np.testing.assert_allclose(-float(updates['x']), want, rtol=1e-5, atol=1e-6)
    if schedule != 'constant':
      np.testing.assert_allclose(float(optax_lr(t)), want, rtol=1e-6, atol=1e-7)


def test_schedule_settings_are_checked_and_fingerprinted():
  with pytest.raises(config.ConfigError, match=r"config.optim.schedule must be one of .*got 'linear'"):
    configs.invert('pmsfc', **{'optim.schedule': 'linear'})
  with pytest.raises(config.ConfigError, match=r'config.optim.warmup_fraction must be in \[0, 1\), got 1.5'):
    configs.invert('pmsfc', **{'optim.warmup_fraction': 1.5})
  base = configs.invert('pmsfc')
  settings = config.result_settings(base)
  # Folders of before the schedules (no 'schedule' key) keep their fingerprint; warmup_fraction counts
  # only with the schedule that reads it.
  assert 'schedule' not in fingerprint.without_later_settings(settings)['optim']
  assert 'warmup_fraction' not in settings['optim']
  cos = config.result_settings(config.override(base, {'optim.schedule': 'cosine'}))
  assert fingerprint.without_later_settings(cos)['optim']['schedule'] == 'cosine'
  warm = config.result_settings(config.override(base, {'optim.schedule': 'warmup_cosine'}))
  assert warm['optim']['warmup_fraction'] == 0.05


def test_log_steps_and_steps_to_reach():
  assert convergence.log_steps(25, 400, 1) == [25, 50, 100, 200, 400]
  steps = convergence.log_steps(25, 3200)
  assert steps[:5] == [25, 30, 35, 42, 50] and steps[-1] == 3200 and len(steps) == 29
  assert convergence.log_steps(25, 3000)[-2:] == [2691, 3000]
  with pytest.raises(ValueError, match='need 1 <= first <= last'):
    convergence.log_steps(30, 20)
  assert convergence.steps_to_reach([1, 2, 4], [10.0, 20.0, 30.0], 15.0) == 2
  assert convergence.steps_to_reach([1, 2, 4], [10.0, 20.0, 30.0], 31.0) is None
  assert convergence.steps_to_reach([1, 2, 4], [0.5, 0.3, 0.1], 0.3, higher_is_better=False) == 2


def test_best_envelope_and_the_plot(tmp_path):
  curves = {'a': ([1, 2, 4], [10.0, 12.0, 11.0]), 'b': ([2, 4, 8], [13.0, 9.0, 14.0])}
  # max over curves per step: 10, 13, 11, 14; then the best within s steps: 10, 13, 13, 14.
  assert convergence.best_envelope(curves) == ([1, 2, 4, 8], [10.0, 13.0, 13.0, 14.0])
  out = plots.plot_convergence(
    {'reconstruct': {'pmsfc_adam_0.03': curves['a'], 'mganprior_sgd_1': curves['b']}}, tmp_path / 'c.png'
  )
  assert out.exists() and len(out.read_bytes()) > 1000


def test_random_partition_keeps_the_subspace_sizes():
  labels = np.repeat(np.arange(6), [20, 15, 10, 9, 6, 4])
  rand = clustering.random_partition(labels, seed=1)
  assert np.array_equal(np.bincount(rand, minlength=6), np.bincount(labels, minlength=6))
  assert np.mean(rand != labels) > 0.5  # really another grouping
  assert np.array_equal(rand, clustering.random_partition(labels, seed=1))


@pytest.mark.parametrize('method', ['pmsfc', 'mganprior'])
def test_recorder_equals_separate_evaluations(tiny_generator, method):
  gen = tiny_generator
  c = 64
  masks = clustering.masks_from_labels(np.arange(c) % 3, 3)
  cfg = configs.invert(
    f'{method},local',
    num_codes=2,
    iterations=7,
    perceptual_weight=0.0,
    lr=0.05,
    **{'optim.schedule': 'cosine'},
  )
  targets = np.asarray(jax.random.uniform(jax.random.key(2), (2, 32, 32, 3), minval=-1, maxval=1))
  keys = jax.random.split(jax.random.key(5), 2)
  m = None if method == 'mganprior' else masks
  evaluate = lambda r: {
    'psnr': np.asarray(metrics.psnr(metrics.to_unit(targets), metrics.to_unit(r.delivered)))
  }
  rec = convergence.record(gen, None, targets, m, cfg, keys, [3, 1, 7], evaluate)
  assert rec['steps'] == [1, 3, 7] and rec['metrics']['psnr'].shape == (3, 2)
  for i, s in enumerate(rec['steps']):
    state = inversion.init_state(gen, None, targets, m, cfg, keys)
    state = inversion.run_steps(gen, None, state, targets, m, cfg, s)
    want = evaluate(inversion.finalize(gen, state, targets, m, cfg))['psnr']
    np.testing.assert_array_equal(rec['metrics']['psnr'][i], want)
  assert np.isfinite(rec['loss_history']).all() and rec['loss_history'].shape == (2, 7)
  with pytest.raises(ValueError, match=r'at_steps must lie in \[1, optim.iterations=7\] and end there'):
    convergence.record(gen, None, targets, m, cfg, keys, [3], evaluate)


def test_reproduce_rows_are_recognised_by_contents_not_paths(tiny_generator):
  from pmsfc_jax.models import pggan

  cfg = presets.reproduce('local')
  rcfg = presets.reproduce_row(cfg, 'pmsfc_fast', 'inpaint')
  masks = clustering.masks_from_labels(np.arange(64) % 2, 2)
  sha = fingerprint.generator_sha256(tiny_generator)
  ident = reproduce.identity(rcfg, sha, 32, masks)
  # The same contents under other paths: the same identity.
  moved = config.override(rcfg, {'model.generator': '/elsewhere/gen', 'model.subspaces': '/elsewhere/sub'})
  assert reproduce.identity(moved, sha, 32, masks) == ident
  # Other weights, masks or inpainting mask at the same paths: another identity.
  other = pggan.Generator(tiny_generator.config, pggan.init_params(tiny_generator.config, jax.random.key(9)))
  assert reproduce.identity(rcfg, fingerprint.generator_sha256(other), 32, masks) != ident
  assert reproduce.identity(rcfg, sha, 32, masks[::-1]) != ident
  assert reproduce.identity(rcfg, sha, 16, masks) != ident  # another centre hole
  # A row of before (files by path) is not taken for one of these contents.
  old = json.loads(json.dumps(ident))
  old['files'] = {'generator': rcfg.model.generator, 'subspaces': rcfg.model.subspaces, 'mask': ''}
  assert reproduce.comparable(old) != reproduce.comparable(ident)
