"""Editing on inverted images: subspace exchange (Fig. 4) and feature interpolation (Fig. 6)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmsfc_jax.core import composition
from pmsfc_jax.core import editing
from pmsfc_jax.core import inversion
from pmsfc_jax.models import pggan
from tests import configs

LAYER = 3


@pytest.fixture(scope='module')
def inverted():
  cfg = pggan.GeneratorConfig(resolution=16, z_dim=32, fmaps_base=512, fmaps_max=32)
  gen = pggan.Generator(cfg, pggan.init_params(cfg, jax.random.key(0)))
  labels = np.random.default_rng(0).permutation(np.arange(32) % 3)
  masks = np.eye(3, dtype=bool)[labels].T
  c = configs.invert('pmsfc,local', perceptual_weight=0.0, num_codes=2, iterations=5, lr=0.05)
  targets = gen(jax.random.normal(jax.random.key(1), (3, 32)))
  res = inversion.invert(gen, None, targets, masks, c, jax.random.key(2))
  return gen, masks, c, res


def test_composed_features_decode_to_the_inverted_images(inverted):
  gen, masks, c, res = inverted
  f = editing.composed_features(gen, res.codes, res.weights, masks, c)
  assert f.shape == (3,) + gen.feature_shape(LAYER)
  np.testing.assert_allclose(np.asarray(editing.decode(gen, f, LAYER)), np.asarray(res.images), atol=1e-4)


def test_exchange_grid(inverted):
  gen, masks, c, res = inverted
  grid = np.asarray(editing.exchange_subspace(gen, res, masks, c, subspace=1))
  assert grid.shape == (3, 3, 16, 16, 3)
  for i in range(3):  # The diagonal is the inversion itself.
    np.testing.assert_allclose(grid[i, i], np.asarray(res.images[i]), atol=1e-4)
  # Independent reference for one pair: replace subspace-1 channels of image 0 by image 2's.
  f = np.asarray(editing.composed_features(gen, res.codes, res.weights, masks, c))
  mixed = f[0].copy()
  mixed[..., masks[1]] = f[2][..., masks[1]]
  ref = np.asarray(gen.g2(jnp.asarray(mixed)[None], LAYER))[0]
  np.testing.assert_allclose(grid[0, 2], ref, atol=1e-4)
  pairs = np.asarray(editing.exchange_subspace(gen, res, masks, c, 1, pairs=[[0, 2], [1, 1]]))
  np.testing.assert_allclose(pairs[0], grid[0, 2], atol=1e-5)
  np.testing.assert_allclose(pairs[1], grid[1, 1], atol=1e-5)
  assert not np.allclose(grid[0, 2], grid[0, 0], atol=1e-3)  # The exchange changes the image.
  with pytest.raises(ValueError, match=r'subspace must be in \[0, 3\), got 3'):
    editing.exchange_subspace(gen, res, masks, c, 3)


def test_exchanging_every_subspace_gives_the_other_image(inverted):
  gen, masks, c, res = inverted
  f = editing.composed_features(gen, res.codes, res.weights, masks, c)
  mixed = f[0]
  for r in range(masks.shape[0]):
    mixed = editing.exchange_features(mixed, f[1], masks[r])
  np.testing.assert_allclose(np.asarray(mixed), np.asarray(f[1]), atol=1e-6)


def test_interpolation_path(inverted):
  gen, masks, c, res = inverted
  path = np.asarray(editing.interpolate(gen, res, masks, c, 0, 2, num_frames=5))
  assert path.shape == (5, 16, 16, 3)
  np.testing.assert_allclose(path[0], np.asarray(res.images[0]), atol=1e-4)
  np.testing.assert_allclose(path[-1], np.asarray(res.images[2]), atol=1e-4)
  f = editing.composed_features(gen, res.codes, res.weights, masks, c)
  mid = composition.decode(gen, 0.5 * (f[0] + f[2]), LAYER)
  np.testing.assert_allclose(path[2], np.asarray(mid), atol=1e-4)


def test_interpolation_works_for_mganprior(inverted):
  gen, _, _, _ = inverted
  c = configs.invert('mganprior,local', perceptual_weight=0.0, num_codes=3, iterations=2)
  targets = gen(jax.random.normal(jax.random.key(4), (2, 32)))
  res = inversion.invert(gen, None, targets, None, c, jax.random.key(5))
  path = np.asarray(editing.interpolate(gen, res, None, c, 0, 1, num_frames=3))
  np.testing.assert_allclose(path[0], np.asarray(res.images[0]), atol=1e-4)
  np.testing.assert_allclose(path[-1], np.asarray(res.images[1]), atol=1e-4)
