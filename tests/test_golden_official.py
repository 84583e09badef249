"""Golden check with the real official weights (opt-in): our G(z) reproduces the official PmSFC images.

``shared/data/official/generated/{celebahq,bedroom}/image_N_z.npy`` hold latents (1 x 512) and
``image_N.png`` the image the official PGGAN generated from them (RGB uint8, 1024x1024 / 256x256, the
[-1, 1] output mapped by (x + 1) * 127.5 and clipped). Run with the real weights:

  PMSFC_CELEBAHQ_CHECKPOINT=/path/karras2018iclr-celebahq-1024x1024.pkl \
  PMSFC_BEDROOM_CHECKPOINT=/path/karras2018iclr-lsun-bedroom-256x256.pkl \
  python -m pytest -q tests/test_golden_official.py

Each variable may name a raw NVIDIA TF pickle, an mGANprior ``.pth`` (pggan_celebahq1024_generator.pth,
pggan_bedroom256_generator.pth) or an already converted generator directory.
"""

import os

import jax
import numpy as np
import pytest
from PIL import Image

from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import images as imageio
from pmsfc_jax.models import pggan

CASES = {
  'celebahq': (
    'PMSFC_CELEBAHQ_CHECKPOINT',
    1024,
    'karras2018iclr-celebahq-1024x1024.pkl or pggan_celebahq1024_generator.pth',
  ),
  'bedroom': (
    'PMSFC_BEDROOM_CHECKPOINT',
    256,
    'karras2018iclr-lsun-bedroom-256x256.pkl or pggan_bedroom256_generator.pth',
  ),
}
MIN_PSNR = 35.0


def load_any(path: str) -> pggan.Generator:
  """A converted directory, or a raw .pkl / .pth converted in memory."""
  if os.path.isdir(path):
    return checkpoints.load_generator(path)
  from weights_conversion import convert

  config, params, _ = convert.convert_file(path)
  return pggan.Generator(config, params)


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float('inf') if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize('name', sorted(CASES))
def test_official_generator_reproduces_official_images(name, shared_data):
  var, resolution, files = CASES[name]
  path = os.environ.get(var)
  if not path:
    pytest.skip(
      f'golden test needs the real {name} weights: set {var}=/path/to/({files}) or to a directory '
      f'converted with `python -m launch.convert`, then run `python -m pytest -q {__file__}`'
    )
  gen = load_any(path)
  assert gen.config.resolution == resolution and gen.config.z_dim == 512, gen.config
  scores = golden_psnrs(gen, shared_data / 'official' / 'generated' / name)
  bad = {k: round(v, 2) for k, v in scores.items() if v < MIN_PSNR}
  assert not bad, f'PSNR below {MIN_PSNR} dB: {bad} (all: {scores})'


def golden_psnrs(gen: pggan.Generator, folder) -> dict[str, float]:
  """PSNR (dB) of our uint8 G(z) against image_N.png for every image_N_z.npy in ``folder``."""
  z_files = sorted(folder.glob('image_*_z.npy'))
  assert z_files, f'no latents in {folder}'
  fn = jax.jit(lambda params, z: pggan.generate(gen.config, params, z))
  scores = {}
  for zf in z_files:
    z = np.load(zf).astype(np.float32).reshape(1, gen.config.z_dim)
    want = np.asarray(Image.open(zf.with_name(zf.name.replace('_z.npy', '.png'))).convert('RGB'))
    got = imageio.to_uint8(np.asarray(fn(gen.params, z))[0])
    assert got.shape == want.shape, f'{zf.name}: generated {got.shape}, official PNG {want.shape}'
    scores[zf.name] = psnr_uint8(got, want)
  return scores


def test_golden_machinery_on_synthetic_folder(tiny_generator, tmp_path):
  """The comparison itself works: PNGs made like the official ones pass, a perturbed model fails."""
  rng = np.random.default_rng(0)
  for n in (3, 11):
    z = rng.standard_normal((1, 64)).astype(np.float32)
    np.save(tmp_path / f'image_{n}_z.npy', z)
    img = np.asarray(tiny_generator(z))[0]
    Image.fromarray(np.clip((img + 1) * 127.5, 0, 255).astype(np.uint8)).save(tmp_path / f'image_{n}.png')
  scores = golden_psnrs(tiny_generator, tmp_path)
  assert set(scores) == {'image_3_z.npy', 'image_11_z.npy'} and min(scores.values()) > 45
  params = jax.tree.map(lambda a: a, tiny_generator.params)
  params['ToRGB']['bias'] = params['ToRGB']['bias'] + 0.1
  assert max(golden_psnrs(pggan.Generator(tiny_generator.config, params), tmp_path).values()) < MIN_PSNR
