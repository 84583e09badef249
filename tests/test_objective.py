"""Reconstruction loss (Eq. 2): parity with mGANprior's formula, per-image semantics, masks, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmsfc_jax.core import config
from pmsfc_jax.core import degradations
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


# --- Eq. 9: inpainting as mGANprior, Eq. 9 as written ----------------------------------------------


def _soft_known(shape, seed):
  """Known-pixel weights k in [0, 1] with exact holes (0), exact known pixels (1) and soft values."""
  u = np.random.default_rng(seed).uniform(size=shape)
  return np.clip(1.5 * u - 0.25, 0.0, 1.0).astype(np.float32)


def _mganprior_masked_loss(params, x_hat, gt, hole, vgg_lambda):
  """mGANprior utils/manipulate.py:66-71 masked_loss around CombinationLoss (inversion/losses.py:33-40,
  nn.MSELoss, L1 VGG * 0.001), float64 torch with the full (unmasked) ground truth, no resize."""
  torch = torch_util.require()
  F = torch.nn.functional
  x_t, gt_t, m = (torch.from_numpy(np.asarray(a, np.float64)) for a in (x_hat, gt, hole))
  x_mask, gt_mask = x_t * (1 - m), gt_t * (1 - m)
  v = lambda img: torch.from_numpy(_torch_vgg_features(params, (img.numpy() + 1) / 2, 'relu3_3'))
  return float(F.mse_loss(x_mask, gt_mask) + vgg_lambda * F.l1_loss(v(x_mask), v(gt_mask)) * 0.001)


def _mganprior_cfg(task, num_codes, **values):
  """An mGANprior config of the tiny generator (VGG on the 32x32 images as they are)."""
  values = {f'loss.{k}': v for k, v in values.items()}
  return config.override(
    config.InvertConfig(),
    {
      'method.name': 'mganprior',
      'method.num_codes': num_codes,
      'task.name': task,
      'loss.perceptual.resize': None,
    }
    | values,
  )


@pytest.mark.parametrize('pixel_mean', ['all', 'known'])
def test_inpainting_objective_matches_mganprior_with_soft_masks(tiny_generator, pixel_mean):
  """Soft weights enter as k^2 (mGANprior), not k^3; 'all' is mGANprior's divisor, 'known' the k^2-mean."""
  gen = tiny_generator
  cfg = _mganprior_cfg('inpaint', 3, perceptual_weight=0.1, pixel_mean=pixel_mean)
  percep = pretrained.load_perceptual(cfg.loss.perceptual)
  rng = np.random.default_rng(1)
  params = {
    'codes': jnp.asarray(rng.normal(size=(3, 64)), jnp.float32),
    'weights': jnp.asarray(rng.uniform(0.2, 0.5, size=(3, 64)), jnp.float32),
  }
  gt = np.clip(rng.normal(scale=0.5, size=(32, 32, 3)), -1, 1).astype(np.float32)
  k = _soft_known((32, 32, 1), 2)
  assert 0 < np.mean(k == 0) < 0.5 and 0 < np.mean((k > 0) & (k < 1))
  x = degradations.prepare_target(gt[None], cfg.task, k[None])  # what the user has: k * gt
  x = np.asarray(losses.objective_target(x, k[None], 'inpaint'))[0]  # as inversion.run_steps does
  ours = float(jax.jit(losses.objective, static_argnums=(5,))(params, gen, percep, None, x, cfg, None, k))
  x_hat = np.asarray(losses.estimate(gen, params['codes'], params['weights'], None, cfg))
  ref = _mganprior_masked_loss(percep.params, x_hat[None], gt[None], 1 - k[None], vgg_lambda=0.1)
  if pixel_mean == 'known':  # the pixel mean over known pixels: sum(k^2 d^2) / (3 sum k^2)
    sq = np.square(k * (x_hat.astype(np.float64) - gt))
    ref += np.sum(sq) / (3 * np.sum(np.square(k.astype(np.float64)))) - np.mean(sq)
  np.testing.assert_allclose(ours, ref, rtol=2e-5)


def test_eq9_as_written_has_no_perceptual_term_on_degraded_tasks(tiny_generator):
  gen = tiny_generator
  base = _mganprior_cfg('colorize', 2)
  eq9 = _mganprior_cfg('colorize', 2, degraded_perceptual=False)
  rng = np.random.default_rng(3)
  params = {'codes': jnp.asarray(rng.normal(size=(2, 64)), jnp.float32), 'weights': jnp.full((2, 64), 0.5)}
  gray = np.asarray(degradations.grayscale(jnp.asarray(rng.uniform(-1, 1, (1, 32, 32, 3)), jnp.float32)))[0]
  broken = losses.Perceptual(base.loss.perceptual, params={})  # would fail if VGG ran
  assert not losses.uses_perceptual(eq9) and losses.uses_perceptual(base)
  got = float(losses.objective(params, gen, broken, None, gray, eq9))
  x_hat = np.asarray(losses.estimate(gen, params['codes'], params['weights'], None, eq9))
  luma = x_hat @ np.asarray(degradations.LUMA, np.float32)
  np.testing.assert_allclose(got, np.mean(np.square(gray[..., 0] - luma)), rtol=1e-5)  # ||x - P(x_hat)||^2
  with_vgg = float(
    losses.objective(params, gen, pretrained.load_perceptual(base.loss.perceptual), None, gray, base)
  )
  assert with_vgg > got + 1e-5  # the default adds Eq. 8's perceptual term (a documented deviation)
  recon = config.override(eq9, {'task.name': 'reconstruct'})
  assert losses.uses_perceptual(recon)  # Eq. 8 keeps it for reconstruction


def test_pixel_mean_all_and_soft_weights():
  rng = np.random.default_rng(4)
  t, e = (jnp.asarray(rng.normal(size=(2, 6, 6, 3)), jnp.float32) for _ in range(2))
  k = jnp.asarray(_soft_known((2, 6, 6, 1), 5))
  sq = np.square(np.asarray(k * t - k * e, np.float64))
  got_all = losses.pixel_loss(k * t, k * e, k, mean='all')
  got_known = losses.pixel_loss(k * t, k * e, k, mean='known')
  np.testing.assert_allclose(got_all, sq.mean(axis=(1, 2, 3)), rtol=1e-5)
  np.testing.assert_allclose(
    got_known, sq.sum(axis=(1, 2, 3)) / (3 * np.square(k).sum(axis=(1, 2, 3))), rtol=1e-5
  )
  with pytest.raises(ValueError, match=r"pixel mean must be one of \('known', 'all'\), got 'mean'"):
    losses.pixel_loss(t, e, k, mean='mean')
