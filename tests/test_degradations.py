"""Degradations P of Eq. 9: grayscale / YCbCr, downsampling (vs PyTorch), inpainting masks, delivery."""

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from pmsfc_jax.core import config
from pmsfc_jax.core import degradations as D
from pmsfc_jax.io import masks
from tests import torch_util


def _rand(shape, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def test_grayscale_is_bt601_luma_replicated_and_idempotent():
  x = _rand((2, 4, 4, 3))
  g = np.asarray(D.grayscale(jnp.asarray(x)))
  ref = x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114
  for c in range(3):
    np.testing.assert_allclose(g[..., c], ref, atol=1e-6)
  np.testing.assert_allclose(np.asarray(D.grayscale(jnp.asarray(g))), g, atol=1e-6)


def test_ycbcr_matches_pil_and_round_trips():
  u8 = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  pil = np.asarray(Image.fromarray(u8).convert('YCbCr'), np.float32)
  x = u8.astype(np.float32) / 127.5 - 1
  ours = np.asarray(D.rgb_to_ycbcr(jnp.asarray(x)))
  # [-1, 1] data with zero-centred chroma <-> PIL's uint8 YCbCr with +128 offsets.
  np.testing.assert_allclose((ours[..., 0] + 1) * 127.5, pil[..., 0], atol=1.01)
  np.testing.assert_allclose(ours[..., 1:] * 127.5 + 128, pil[..., 1:], atol=1.01)
  np.testing.assert_allclose(np.asarray(D.ycbcr_to_rgb(D.rgb_to_ycbcr(jnp.asarray(x)))), x, atol=1e-5)


def test_merge_luminance_keeps_input_luma_and_estimate_chroma():
  gray = np.asarray(D.grayscale(jnp.asarray(_rand((2, 8, 8, 3), 2))))
  est = _rand((2, 8, 8, 3), 3)
  out = D.merge_luminance(jnp.asarray(est), jnp.asarray(gray))
  np.testing.assert_allclose(np.asarray(D.luminance(out))[..., 0], gray[..., 0], atol=2e-6)
  np.testing.assert_allclose(
    np.asarray(D.rgb_to_ycbcr(out))[..., 1:], np.asarray(D.rgb_to_ycbcr(jnp.asarray(est)))[..., 1:], atol=2e-6
  )


@pytest.mark.parametrize('factor', [2, 4, 3])
@pytest.mark.parametrize('method,torch_mode', [('bilinear', 'bilinear'), ('area', 'area')])
def test_downsample_matches_pytorch(factor, method, torch_mode):
  torch = torch_util.require()
  x = _rand((2, 12, 12, 3), 4)
  ours = np.asarray(D.downsample(jnp.asarray(x), factor, method))
  kw = {'align_corners': False} if torch_mode == 'bilinear' else {}
  ref = (
    torch.nn.functional.interpolate(
      torch.from_numpy(x).permute(0, 3, 1, 2), scale_factor=1 / factor, mode=torch_mode, **kw
    )
    .permute(0, 2, 3, 1)
    .numpy()
  )
  assert ours.shape == (2, 12 // factor, 12 // factor, 3)
  np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_downsample_errors():
  with pytest.raises(ValueError, match='not divisible by the downsample factor 3'):
    D.downsample(jnp.zeros((1, 8, 8, 3)), 3)
  with pytest.raises(ValueError, match="unknown downsample method 'nearest'"):
    D.downsample(jnp.zeros((1, 8, 8, 3)), 2, 'nearest')


@pytest.mark.parametrize('name', ['mask-1.png', 'mask-2.png'])
def test_inpainting_mask_white_is_hole(shared_data, name):
  path = shared_data / 'images' / 'masks' / name
  raw = np.asarray(Image.open(path).convert('RGB'), np.float32).mean(-1) / 255
  known = masks.load_inpainting_mask(path)
  assert known.shape == raw.shape + (1,) and known.dtype == np.float32
  np.testing.assert_array_equal(known[..., 0], (raw <= 0.5).astype(np.float32))
  assert 0 < known.mean() < 1
  soft = masks.load_inpainting_mask(path, threshold=None)
  np.testing.assert_allclose(soft[..., 0], 1 - raw, atol=1e-6)
  small = masks.load_inpainting_mask(path, size=32)
  assert small.shape == (32, 32, 1) and set(np.unique(small)) <= {0.0, 1.0}


def test_inpainting_mask_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='inpainting mask .*nope.png does not exist'):
    masks.load_inpainting_mask(tmp_path / 'nope.png')
  bad = tmp_path / 'bad.png'
  bad.write_bytes(b'not an image')
  with pytest.raises(ValueError, match='bad.png: cannot be read as an image'):
    masks.load_inpainting_mask(bad)


def test_degrade_and_prepare_target_per_task():
  x = jnp.asarray(_rand((1, 8, 8, 3), 5))
  known = jnp.zeros((1, 8, 8, 1)).at[:, :4].set(1.0)
  cfg = config.Task(name='inpaint')
  y = np.asarray(D.prepare_target(x, cfg, known=known))
  np.testing.assert_array_equal(y[:, 4:], 0)
  np.testing.assert_array_equal(y[:, :4], np.asarray(x)[:, :4])
  assert D.prepare_target(x, config.Task('super_resolve', factor=4, downsample='area')).shape == (1, 2, 2, 3)
  np.testing.assert_array_equal(D.prepare_target(x, config.Task('reconstruct')), x)
  with pytest.raises(ValueError, match="task 'inpaint' needs the known-pixel mask"):
    D.degrade(x, 'inpaint')
  with pytest.raises(ValueError, match="unknown task 'deblur'"):
    D.degrade(x, 'deblur')


def test_deliver_inpaint_composites_known_pixels():
  target = jnp.asarray(_rand((1, 4, 4, 3), 6))
  est = jnp.asarray(_rand((1, 4, 4, 3), 7))
  known = jnp.zeros((1, 4, 4, 1)).at[:, :, :2].set(1.0)
  out = np.asarray(D.deliver(est, target * known, 'inpaint', known))
  np.testing.assert_array_equal(out[:, :, :2], np.asarray(target)[:, :, :2])
  np.testing.assert_array_equal(out[:, :, 2:], np.asarray(est)[:, :, 2:])


def test_deliver_inpaint_with_soft_mask_is_mganprior_combine():
  # mGANprior utils/manipulate.py:55-58 combine_inpainting: gt * (1 - mask) + out * mask, mask = 1 - k,
  # from the input the user has (k * gt), not k^2 * gt.
  gt, est = (jnp.asarray(_rand((1, 4, 4, 3), s)) for s in (8, 9))
  k = jnp.asarray(np.random.default_rng(10).uniform(size=(1, 4, 4, 1)).astype(np.float32)).at[:, 0].set(0.0)
  out = np.asarray(D.deliver(est, D.prepare_target(gt, config.Task(name='inpaint'), k), 'inpaint', k))
  np.testing.assert_allclose(out, np.asarray(gt * k + est * (1 - k)), atol=1e-6)


def test_center_hole_mask():
  k = D.center_hole_mask(32)
  assert k.shape == (32, 32, 1) and k.dtype == np.float32
  hole = k[..., 0] == 0
  assert hole.sum() == 16 * 16 and hole[8:24, 8:24].all()  # the central quarter, centred
  np.testing.assert_array_equal(k, D.center_hole_mask(32))  # deterministic
  assert (D.center_hole_mask(9, 0.3)[..., 0] == 0).sum() == 9  # 3x3 hole
  with pytest.raises(ValueError, match='center_hole_mask needs size >= 2 and 0 < hole < 1'):
    D.center_hole_mask(32, 1.0)
