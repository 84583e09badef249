"""Inversion (Eq. 2/8/9): in-domain recovery, batch independence, chunking, tasks, robustness, tracing."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmsfc_jax.core import config
from pmsfc_jax.core import degradations as D
from pmsfc_jax.core import inversion
from pmsfc_jax.core import objective as losses
from pmsfc_jax.io import pretrained
from pmsfc_jax.models import pggan
from tests import configs

LAYER = 3


def _partition(num_subspaces, channels, seed=0):
  labels = np.random.default_rng(seed).permutation(np.arange(channels) % num_subspaces)
  return np.eye(num_subspaces, dtype=bool)[labels].T


def _psnr(a, b):
  return 10 * np.log10(4.0 / np.asarray(jnp.mean((a - b) ** 2, axis=(1, 2, 3))))


def _config(method='pmsfc', task='reconstruct', **kw):
  base = dict(perceptual_weight=0.0, num_codes=3 if method == 'pmsfc' else 6, lr=0.05)
  return configs.invert(f'{method},{task},local', **{**base, **kw})


@pytest.fixture(scope='module')
def small():
  """16x16 generator (z 32, 32 channels), 3 subspace masks, 4 in-domain targets."""
  cfg = pggan.GeneratorConfig(resolution=16, z_dim=32, fmaps_base=512, fmaps_max=32)
  gen = pggan.Generator(cfg, pggan.init_params(cfg, jax.random.key(0)))
  targets = gen(jax.random.normal(jax.random.key(1), (4, cfg.z_dim)))
  return gen, _partition(3, gen.feature_shape(LAYER)[-1]), targets


@pytest.mark.parametrize('method', ['pmsfc', 'mganprior'])
def test_in_domain_recovery(small, method):
  """Bound established here (16x16, R=3 x K=4 / N=12 codes): 300 Adam steps at lr 0.05 take PSNR from
  ~8-9 dB to >= 22 dB and >= initial + 12 dB (measured 24.8-28.5 dB, see docs/inversion.md)."""
  gen, masks, targets = small
  targets = targets[:2]
  cfg = _config(method, iterations=300, chunk_size=300, num_codes=4 if method == 'pmsfc' else 12)
  state0 = inversion.init_state(gen, None, targets, masks, cfg, jax.random.key(3))
  init = inversion.finalize(gen, state0, targets, masks, cfg)  # the initial codes (0 steps)
  res = inversion.invert(gen, None, targets, masks, cfg, jax.random.key(3))
  p0, p1 = _psnr(init.images, targets), _psnr(res.images, targets)
  print(method, 'PSNR initial', p0, 'final', p1)
  assert np.all(p1 >= 22.0), (p0, p1)
  assert np.all(p1 >= p0 + 12.0), (p0, p1)
  hist = np.asarray(res.loss_history)
  assert hist.shape == (2, 300) and np.isfinite(hist).all()
  assert np.all(hist[:, -1] < 0.1 * hist[:, 0])
  np.testing.assert_array_equal(np.asarray(res.step), [300, 300])


@pytest.mark.parametrize('method', ['pmsfc', 'mganprior'])
def test_batch_independence(small, method):
  gen, masks, targets = small
  cfg = _config(method, iterations=15, chunk_size=15)
  keys = jax.random.split(jax.random.key(7), 4)
  batched = inversion.invert(gen, None, targets, masks, cfg, keys)
  for i in range(4):
    alone = inversion.invert(gen, None, targets[i : i + 1], masks, cfg, keys[i : i + 1])
    np.testing.assert_allclose(np.asarray(alone.images[0]), np.asarray(batched.images[i]), atol=2e-4)
    np.testing.assert_allclose(np.asarray(alone.codes[0]), np.asarray(batched.codes[i]), atol=2e-4)
  # Raw (B, 2) uint32 key data is accepted as per-image keys too.
  raw = inversion.invert(gen, None, targets, masks, cfg, jax.random.key_data(keys))
  np.testing.assert_array_equal(np.asarray(raw.codes), np.asarray(batched.codes))


@pytest.mark.parametrize('steps_per_call', [0, 3, 8])  # 0 = auto (one step per call on CPU)
def test_run_steps_in_chunks_equals_one_run(small, steps_per_call):
  """run_steps(4) + run_steps(4) == run_steps(8), whether steps run one per call or in a lax.scan."""
  gen, masks, targets = small
  cfg = _config(iterations=12, steps_per_call=steps_per_call)  # History longer than the 8 steps run.
  key = jax.random.key(5)
  a = inversion.init_state(gen, None, targets, masks, cfg, key)
  a = inversion.run_steps(gen, None, a, targets, masks, cfg, 4)
  a = inversion.run_steps(gen, None, a, targets, masks, cfg, 4)
  b = inversion.init_state(gen, None, targets, masks, cfg, key)
  b = inversion.run_steps(gen, None, b, targets, masks, _config(iterations=12, steps_per_call=8), 8)
  # The same program gives the same floats; a scan body and a lone step are compiled differently.
  chex.assert_trees_all_close(a, b, atol=1e-6 if steps_per_call == 8 else 2e-5, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(a.step), 8)
  assert np.isnan(np.asarray(a.loss_history)[:, 8:]).all()
  assert np.isfinite(np.asarray(a.loss_history)[:, :8]).all()


def test_single_key_is_folded_per_image(small):
  gen, masks, targets = small
  cfg = _config(iterations=1)
  s = inversion.init_state(gen, None, targets, masks, cfg, jax.random.key(9))
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(9), i))(jnp.arange(4))
  t = inversion.init_state(gen, None, targets, masks, cfg, keys)
  np.testing.assert_array_equal(np.asarray(s.codes), np.asarray(t.codes))
  assert s.codes.shape == (4, 3, 3, 32) and s.weights.shape == (4, 3, 3, 32)
  assert not np.allclose(np.asarray(s.codes[0]), np.asarray(s.codes[1]))


def _task_inputs(gen, targets, task, cfg):
  known = None
  if task == 'inpaint':
    known = np.ones((targets.shape[0], 16, 16, 1), np.float32)
    known[:, 4:10, 5:12] = 0
  return D.prepare_target(targets, cfg.task, known=known), known


@pytest.mark.parametrize('task', ['colorize', 'super_resolve', 'inpaint'])
def test_task_objective_improves(small, task):
  gen, masks, gt = small
  cfg = _config('pmsfc', task, iterations=40, chunk_size=40, factor=4, downsample='area')
  x, known = _task_inputs(gen, gt[:2], task, cfg)
  state0 = inversion.init_state(gen, None, x, masks, cfg, jax.random.key(2), aux=known)
  init = inversion.finalize(gen, state0, x, masks, cfg, aux=known)  # the initial codes (0 steps)
  res = inversion.invert(gen, None, x, masks, cfg, jax.random.key(2), aux=known)
  kn = None if known is None else jnp.asarray(known)
  p = lambda im: D.degrade(im, task, factor=4, method='area', known=kn)
  err0 = np.asarray(jnp.mean((p(init.images) - x) ** 2, axis=(1, 2, 3)))
  err1 = np.asarray(jnp.mean((p(res.images) - x) ** 2, axis=(1, 2, 3)))
  assert np.all(err1 < 0.5 * err0), (err0, err1)
  assert res.images.shape == res.delivered.shape == (2, 16, 16, 3)
  if task == 'colorize':  # Delivered keeps the input luminance exactly.
    np.testing.assert_allclose(np.asarray(D.luminance(res.delivered)), np.asarray(D.luminance(x)), atol=2e-6)
  if task == 'inpaint':
    np.testing.assert_array_equal(np.asarray(res.delivered) * known, np.asarray(x) * known)
  if task == 'super_resolve':
    assert x.shape == (2, 4, 4, 3)


@pytest.mark.parametrize('case', ['zero_init', 'extreme_weights', 'zero_target'])
def test_no_nans(small, case):
  gen, masks, targets = small
  cfg = _config(iterations=4, init='zeros' if case == 'zero_init' else 'normal')
  if case == 'zero_target':
    targets = jnp.zeros_like(targets)
  state = inversion.init_state(gen, None, targets, masks, cfg, jax.random.key(0))
  if case == 'extreme_weights':
    w = np.asarray(state.weights).copy()
    w[:, :, 0] = 40.0
    w[:, :, 1] = -40.0  # tanh sums cancel exactly where K = 3 gives (1, -1, w2 = +-40).
    w[:, :, 2] = np.where(np.arange(w.shape[-1]) % 2, 40.0, -40.0)
    state = state.replace(weights=jnp.asarray(w))
  state = inversion.run_steps(gen, None, state, targets, masks, cfg, 4)
  res = inversion.finalize(gen, state, targets, masks, cfg)
  for leaf in jax.tree_util.tree_leaves(res):
    assert np.isfinite(np.asarray(leaf)).all(), case


def test_jit_traces_once_per_shape(small):
  gen, masks, targets = small
  cfg = _config(iterations=6)
  s = inversion.parse(cfg)
  m = jnp.asarray(masks, jnp.float32)
  traced = jax.jit(chex.assert_max_traces(inversion.run_steps_impl, n=1), static_argnums=(7, 8))
  state = inversion.init_state(gen, None, targets, masks, cfg, jax.random.key(0))
  for _ in range(3):
    state = traced(gen, None, state, targets, None, m, None, s, 2)
  # The public API: equal configs (rebuilt each call) and shapes hit the cache.
  before = inversion._run_steps_jit._cache_size()
  for _ in range(3):
    state = inversion.run_steps(gen, None, state, targets, masks, _config(iterations=6), 2)
  assert inversion._run_steps_jit._cache_size() - before <= 1


def test_objective_with_real_vgg_matches_loss_module(small):
  gen, masks, targets = small
  try:
    percep = pretrained.load_perceptual(config.PerceptualConfig(layer='relu2_2', resize=None))
  except Exception as e:  # pylint: disable=broad-except
    pytest.skip(f'VGG16 weights unavailable: {e}')
  cfg = _config(iterations=4, perceptual_weight=1.0)
  state = inversion.init_state(gen, percep, targets[:2], masks, cfg, jax.random.key(1))
  images0 = inversion.finalize(gen, state, targets[:2], masks, cfg).images
  expected = losses.reconstruction_loss(percep, targets[:2], images0)
  state = inversion.run_steps(gen, percep, state, targets[:2], masks, cfg, 4)
  hist = np.asarray(state.loss_history)
  np.testing.assert_allclose(hist[:, 0], np.asarray(expected), rtol=1e-4)
  assert np.isfinite(hist).all() and np.all(hist[:, -1] < hist[:, 0])


def test_errors(small):
  gen, masks, targets = small
  with pytest.raises(ValueError, match="method 'pmsfc' needs subspace masks"):
    inversion.init_state(gen, None, targets, None, _config(), jax.random.key(0))
  with pytest.raises(ValueError, match=r'targets must have shape \(B, 4, 4, 3\) \(the low-resolution'):
    inversion.init_state(
      gen, None, targets, masks, _config(task='super_resolve', factor=4), jax.random.key(0)
    )
  with pytest.raises(ValueError, match="task 'inpaint' needs aux"):
    inversion.init_state(gen, None, targets, masks, _config(task='inpaint'), jax.random.key(0))
  with pytest.raises(ValueError, match='perceptual_weight != 0 needs the perceptual network'):
    cfg = _config(perceptual_weight=1.0)
    st = inversion.init_state(gen, None, targets, masks, cfg, jax.random.key(0))
    inversion.run_steps(gen, None, st, targets, masks, cfg, 1)
  with pytest.raises(ValueError, match=r"config.optim.optimizer must be one of \('adam', 'sgd'\)"):
    _config(optimizer='lbfgs')
  # mGANprior needs no masks.
  inversion.init_state(gen, None, targets, None, _config('mganprior'), jax.random.key(0))
