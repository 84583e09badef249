"""Composition of Eq. 1 (mGANprior) and Eq. 6-7 (PmSFC) against loop references; the safe denominator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmsfc_jax.core import composition as C

LAYER = 3


def _partition(num_subspaces, channels, seed=0):
  labels = np.random.default_rng(seed).permutation(np.arange(channels) % num_subspaces)
  return np.eye(num_subspaces, dtype=bool)[labels].T


def _g1(gen, z):
  return np.asarray(gen.g1(jnp.asarray(z)[None], LAYER))[0]


@pytest.fixture(scope='module')
def setup(tiny_generator):
  gen = tiny_generator
  channels = gen.feature_shape(LAYER)[-1]
  rng = np.random.default_rng(1)
  r, k = 3, 2
  z = rng.normal(size=(r, k, gen.config.z_dim)).astype(np.float32)
  w = rng.normal(size=(r, k, channels)).astype(np.float32)
  return gen, channels, z, w, _partition(r, channels)


def test_mganprior_matches_loop_reference(setup):
  gen, channels, _, _, _ = setup
  rng = np.random.default_rng(2)
  n = 3
  z = rng.normal(size=(n, gen.config.z_dim)).astype(np.float32)
  alpha = rng.normal(size=(n, channels)).astype(np.float32)
  ref = sum(_g1(gen, z[i]) * alpha[i] for i in range(n)) / n
  ours = np.asarray(C.mganprior_features(gen, jnp.asarray(z), jnp.asarray(alpha), LAYER))
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(C.mganprior_init_weights(n, channels)), 1 / n)


def test_pmsfc_matches_loop_reference(setup):
  gen, channels, z, w, masks = setup
  r, k = z.shape[:2]
  ref = np.zeros(gen.feature_shape(LAYER), np.float32)
  for ri in range(r):
    t = np.tanh(w[ri])
    num = sum(masks[ri] * _g1(gen, z[ri, ki]) * t[ki] for ki in range(k))
    ref += num / t.sum(0)
  ours = np.asarray(
    C.pmsfc_features(gen, jnp.asarray(z), jnp.asarray(w), jnp.asarray(masks, jnp.float32), LAYER)
  )
  np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=1e-3)
  per = np.asarray(
    C.pmsfc_features(gen, jnp.asarray(z), jnp.asarray(w), jnp.asarray(masks), LAYER, per_subspace=True)
  )
  assert per.shape == (r,) + gen.feature_shape(LAYER)
  np.testing.assert_allclose(per.sum(0), ours, atol=1e-4)
  for ri in range(r):  # f^r is zero outside its subspace.
    np.testing.assert_array_equal(per[ri][..., ~masks[ri]], 0)


def test_single_all_ones_subspace_is_tanh_weighted_mganprior_composition(setup):
  gen, channels, z, w, _ = setup
  z1, w1 = z[:1], w[:1]
  ones = jnp.ones((1, channels))
  ours = C.pmsfc_features(gen, jnp.asarray(z1), jnp.asarray(w1), ones, LAYER)
  t = np.tanh(w1[0])
  feats = np.asarray(gen.g1(jnp.asarray(z1[0]), LAYER))
  ref = np.einsum('khwc,kc->hwc', feats, t) / t.sum(0)
  np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-4, rtol=1e-4)


def test_permuting_codes_within_a_subspace_is_invariant(setup):
  gen, _, z, w, masks = setup
  perm = np.array([1, 0])
  m = jnp.asarray(masks, jnp.float32)
  a = C.pmsfc_features(gen, jnp.asarray(z), jnp.asarray(w), m, LAYER)
  b = C.pmsfc_features(gen, jnp.asarray(z[:, perm]), jnp.asarray(w[:, perm]), m, LAYER)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_init_weights_give_the_mean_and_unit_denominator():
  w = C.pmsfc_init_weights(6, 5, 8)
  np.testing.assert_allclose(np.tanh(np.asarray(w)), 0.2, atol=1e-6)
  coef = np.asarray(C.pmsfc_coefficients(w, jnp.ones((6, 8))))
  np.testing.assert_allclose(coef, 0.2, atol=1e-6)
  assert np.isfinite(np.asarray(C.pmsfc_init_weights(2, 1, 4))).all()  # K = 1: tanh(w) = 1/2.


def test_safe_denominator_keeps_sign_and_magnitude():
  d = jnp.array([-1.0, -1e-6, 0.0, 1e-6, 2.0])
  np.testing.assert_allclose(np.asarray(C.safe_denominator(d, 1e-3)), [-1.0, -1e-3, 1e-3, 1e-3, 2.0])


@pytest.mark.parametrize('kind', ['cancel', 'extreme', 'zero'])
def test_composition_and_gradient_stay_finite(setup, kind):
  gen, channels, z, _, masks = setup
  if kind == 'cancel':  # tanh(w_0) + tanh(w_1) == 0 exactly.
    w = np.stack([np.full((3, channels), 0.7), np.full((3, channels), -0.7)], 1).astype(np.float32)
  elif kind == 'extreme':
    w = np.where(np.random.default_rng(3).random((3, 2, channels)) > 0.5, 1e4, -1e4).astype(np.float32)
  else:
    w = np.zeros((3, 2, channels), np.float32)
  m = jnp.asarray(masks, jnp.float32)

  def f(w):
    return jnp.sum(C.decode(gen, C.pmsfc_features(gen, jnp.asarray(z), w, m, LAYER), LAYER) ** 2)

  val, grad = jax.value_and_grad(f)(jnp.asarray(w))
  assert np.isfinite(float(val)) and np.isfinite(np.asarray(grad)).all()


def test_check_masks_errors():
  with pytest.raises(ValueError, match=r'subspace masks must have shape \(R, 8\)'):
    C.check_masks(np.ones((2, 4), bool), 8)
  with pytest.raises(
    ValueError, match=r'must partition the 4 channels \(each channel in exactly one subspace\); 3 channel'
  ):
    C.check_masks(np.array([[1, 1, 0, 0], [0, 1, 0, 0]], bool), 4)
  with pytest.raises(ValueError, match='must be binary'):
    C.check_masks(np.full((1, 4), 0.5), 4)
  assert C.check_masks(np.array([[1, 1, 0, 0]], bool), 4, require_partition=False).dtype == bool
  with pytest.raises(ValueError, match="method 'pmsfc' needs subspace masks"):
    C.compose(None, None, None, None, 3, 'pmsfc')
