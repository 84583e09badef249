"""Reconstruction loss (Eq. 2): parity with mGANprior's formula, per-image semantics, masks, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmsfc_jax.core import objective as losses
from pmsfc_jax.io import images as imageio
from pmsfc_jax.io import pretrained
from tests import torch_util
from tests.test_vgg import _torch_vgg_features

CFG = losses.PerceptualConfig(resize=32)  # mGANprior resizes to 256; 32 keeps the test fast.


@pytest.fixture(scope='module')
def percep():
  return pretrained.load_perceptual(CFG)


@pytest.fixture(scope='module')
def pair(public_images):
  target = np.stack([imageio.load_image(public_images[n], size=24) for n in ('astronaut', 'coffee')])
  noise = np.random.default_rng(0).normal(scale=0.2, size=target.shape).astype(np.float32)
  return jnp.asarray(target), jnp.asarray(np.clip(target + noise, -1, 1))


def _mganprior_loss(params, x, gt):
  """mGANprior CombinationLoss (l2_lambda=1, vgg_lambda=1, vgg_loss_type='L1') for one image, torch."""
  torch = torch_util.require()
  F = torch.nn.functional
  x_t, gt_t = (torch.from_numpy(np.asarray(a, np.float64)) for a in (x, gt))
  l2 = F.mse_loss(x_t, gt_t)

  def v(img):
    up = F.interpolate(img.permute(0, 3, 1, 2), size=CFG.resize, mode='nearest').permute(0, 2, 3, 1)
    return torch.from_numpy(_torch_vgg_features(params, (up.numpy() + 1) / 2, 'relu3_3'))

  return float(l2 + F.l1_loss(v(x_t), v(gt_t)) * 0.001)


def test_matches_mganprior_formula(percep, pair):
  target, estimate = pair
  ours = np.asarray(jax.jit(losses.reconstruction_loss)(percep, target, estimate))
  assert ours.shape == (2,)
  ref = [_mganprior_loss(percep.params, estimate[i : i + 1], target[i : i + 1]) for i in range(2)]
  np.testing.assert_allclose(ours, ref, rtol=1e-5)
  vgg_term = ours - np.mean(np.square(np.asarray(target - estimate)), axis=(1, 2, 3))
  assert np.all(vgg_term > 1e-4)  # the perceptual term contributes


def test_precomputed_target_features_and_batch_independence(percep, pair):
  target, estimate = pair
  feats = losses.perceptual_features(percep, target)
  assert feats.shape == (2, 8, 8, 256)  # relu3_3 of a 32x32 input
  full = losses.reconstruction_loss(percep, target, estimate)
  pre = losses.reconstruction_loss(percep, target, estimate, target_features=feats)
  single = jax.vmap(lambda t, e, f: losses.reconstruction_loss(percep, t[None], e[None], f[None])[0])(
    target, estimate, feats
  )
  np.testing.assert_allclose(pre, full, rtol=1e-6)
  np.testing.assert_allclose(single, full, rtol=1e-5)


def test_pixel_mask(percep, pair):
  target, estimate = pair
  mask = np.zeros((2, 24, 24, 1), np.float32)
  mask[0, :10] = 1.0  # image 1 has no known pixel at all
  got = losses.reconstruction_loss(
    percep, target, estimate, pixel_mask=jnp.asarray(mask), perceptual_weight=0.0
  )
  sq = np.square(np.asarray(target - estimate))
  np.testing.assert_allclose(got, [sq[0, :10].mean(), 0.0], rtol=1e-6)


def test_zero_perceptual_weight_skips_vgg(pair):
  target, estimate = pair
  broken = losses.Perceptual(CFG, params={})  # would fail if VGG ran
  got = losses.reconstruction_loss(broken, target, estimate, perceptual_weight=0, pixel_weight=2.0)
  np.testing.assert_allclose(got, 2 * np.mean(np.square(np.asarray(target - estimate)), (1, 2, 3)), rtol=1e-6)
  with pytest.raises(ValueError, match='percep is None'):
    losses.reconstruction_loss(None, target, estimate)


def test_gradients_finite(percep, pair):
  target, estimate = pair
  feats = losses.perceptual_features(percep, target)
  grad_fn = jax.jit(jax.grad(lambda p, t, e, f: losses.reconstruction_loss(p, t, e, f).sum(), argnums=2))
  for est in (estimate, target):  # also at the optimum (|0| in the L1 term)
    g = np.asarray(grad_fn(percep, target, est, feats))
    assert np.isfinite(g).all()
  assert np.abs(np.asarray(grad_fn(percep, target, estimate, feats))).max() > 0


def test_l2_feature_variant(percep, pair):
  target, estimate = pair
  p2 = losses.Perceptual(losses.PerceptualConfig(resize=32, feature_loss='l2'), percep.params)
  ft, fe = losses.perceptual_features(p2, target), losses.perceptual_features(p2, estimate)
  got = losses.reconstruction_loss(p2, target, estimate, pixel_weight=0.0)
  np.testing.assert_allclose(got, 0.001 * np.mean(np.square(np.asarray(ft - fe)), (1, 2, 3)), rtol=1e-5)


def test_config_validation():
  with pytest.raises(ValueError, match="feature_loss must be 'l1' or 'l2'"):
    losses.PerceptualConfig(feature_loss='huber')
  with pytest.raises(ValueError, match='unknown VGG16 layer'):
    losses.PerceptualConfig(layer='conv3_3')
  assert hash(losses.PerceptualConfig()) == hash(losses.PerceptualConfig())
