"""Golden check with the real official weights: our G(z) reproduces the images the PmSFC authors published.

The references ship with the repository (``tests/data/golden/{celebahq,bedroom}/``: official latents and
the images the official PGGANs made from them; CelebA-HQ downsized 4x by exact area averaging, bedroom at
its full 256x256; provenance in ``tests/data/golden/PROVENANCE.md``), so on any clone:

  PMSFC_CELEBAHQ_CHECKPOINT=/path/karras2018iclr-celebahq-1024x1024.pkl \\
  PMSFC_BEDROOM_CHECKPOINT=/path/karras2018iclr-lsun-bedroom-256x256.pkl \\
  python -m pytest -q tests/test_golden_official.py

Each variable may name a raw NVIDIA TF pickle, an mGANprior ``.pth`` (pggan_celebahq1024_generator.pth,
pggan_bedroom256_generator.pth) or a directory converted with ``python -m launch.convert``. How it
compares (``pmsfc_jax/evaluation/golden.py``): our float output -> uint8 ``clip(rint((x + 1) * 127.5))``
(the official PNGs' mapping) -> for CelebA-HQ the same exact 4x4 area average as the shipped references
-> PSNR over all pixels, >= 35 dB per image. With the shared data folder too, the full-resolution
originals of every official pair are compared as well (the strict check).
"""

import hashlib
import json
import os
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from pmsfc_jax.evaluation import golden
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import images as imageio
from pmsfc_jax.models import pggan
from tests.conftest import TEST_DATA

GOLDEN = TEST_DATA / 'golden'
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


def load_any(path: str) -> pggan.Generator:
  """A converted directory, or a raw .pkl / .pth converted in memory."""
  if os.path.isdir(path):
    return checkpoints.load_generator(path)
  from weights_conversion import convert

  config, params, _ = convert.convert_file(path)
  return pggan.Generator(config, params)


def real_generator(name: str) -> pggan.Generator:
  var, resolution, files = CASES[name]
  path = os.environ.get(var)
  if not path:
    pytest.skip(
      f'golden test needs the real {name} weights: set {var}=/path/to/({files}) or to a directory '
      f'converted with `python -m launch.convert`, then run `python -m pytest -q {__file__}`'
    )
  gen = load_any(path)
  assert gen.config.resolution == resolution and gen.config.z_dim == 512, gen.config
  return gen


@pytest.mark.parametrize('name', sorted(CASES))
def test_official_generator_reproduces_official_images(name):
  scores = golden.check_generator(real_generator(name), GOLDEN / name)
  bad = {k: round(v, 2) for k, v in scores.items() if v < golden.MIN_PSNR_DB}
  assert not bad, f'PSNR below {golden.MIN_PSNR_DB} dB: {bad} (all: {scores})'


@pytest.mark.parametrize('name', sorted(CASES))
def test_official_generator_full_resolution(name, shared_data):
  """Every official pair of the shared folder, at full resolution (celebahq: 10 pairs at 1024)."""
  gen = real_generator(name)
  folder = shared_data / 'official' / 'generated' / name
  fn = jax.jit(lambda params, z: pggan.generate(gen.config, params, z))
  scores = {}
  for zf in sorted(folder.glob('image_*_z.npy')):
    want = np.asarray(Image.open(zf.with_name(zf.name.replace('_z.npy', '.png'))).convert('RGB'))
    got = imageio.to_uint8(np.asarray(fn(gen.params, np.load(zf).reshape(1, 512)))[0])
    scores[zf.name] = golden.psnr_uint8(got, want)
  assert len(scores) >= 7 and min(scores.values()) >= golden.MIN_PSNR_DB, scores


# ----------------------------------------------------------------------------------------------------
# The machinery, without real weights.


def test_shipped_golden_files_match_their_json():
  for name, (_, resolution, _) in CASES.items():
    d = GOLDEN / name
    meta = golden.load_meta(d)
    assert (meta['model'], meta['source_resolution'], meta['resolution']) == (name, resolution, 256)
    assert meta['min_psnr_db'] == golden.MIN_PSNR_DB and meta['downsample_factor'] == resolution // 256
    assert hashlib.sha256((d / 'z.npy').read_bytes()).hexdigest() == meta['z_sha256']
    for entry in meta['names']:
      assert hashlib.sha256((d / entry['png']).read_bytes()).hexdigest() == entry['png_sha256']
    z, refs = golden.load_latents(d), golden.load_references(d)
    assert z.shape == (len(meta['names']), 512) and refs.shape == (len(meta['names']), 256, 256, 3)
    assert refs.dtype == np.uint8 and np.all(np.isfinite(z))
  assert sum(f.stat().st_size for f in GOLDEN.rglob('*') if f.is_file()) < 2_000_000


def test_shipped_golden_sets_are_the_official_files(shared_data):
  """The latents are the official ones; the official full-resolution PNGs, as float images, go through
  the pipeline to exactly the shipped references (+inf dB), and a +0.1 offset fails."""
  for name in CASES:
    d, src = GOLDEN / name, shared_data / 'official' / 'generated' / name
    meta = golden.load_meta(d)
    full = np.stack([np.asarray(Image.open(src / e['png']).convert('RGB')) for e in meta['names']])
    for i, e in enumerate(meta['names']):
      np.testing.assert_array_equal(np.load(src / f'{e["name"]}_z.npy')[0], golden.load_latents(d)[i])
      assert hashlib.sha256((src / e['png']).read_bytes()).hexdigest() == e['original_png_sha256']
    as_float = full.astype(np.float32) / np.float32(127.5) - np.float32(1)
    assert np.all(np.isinf(golden.golden_psnr(as_float, d)))
    assert golden.golden_psnr(as_float + 0.1, d).max() < golden.MIN_PSNR_DB
    f = meta['downsample_factor']
    n, h, w, c = full.shape  # an independent statement of the downsizing: floor(mean + 1/2)
    mean = full.astype(np.float64).reshape(n, h // f, f, w // f, f, c).mean(axis=(2, 4))
    np.testing.assert_array_equal(np.floor(mean + 0.5).astype(np.uint8), golden.load_references(d))


def _stand_in_golden(gen: pggan.Generator, folder, factor=2):
  """The shipped celebahq latents with references made by the documented pipeline from ``gen``."""
  folder.mkdir()
  shutil.copyfile(GOLDEN / 'celebahq' / 'z.npy', folder / 'z.npy')
  meta = golden.load_meta(GOLDEN / 'celebahq')
  res = gen.config.resolution
  meta.update(source_resolution=res, resolution=res // factor, downsample_factor=factor)
  (folder / golden.GOLDEN_JSON).write_text(json.dumps(meta))
  x = np.asarray(gen(golden.load_latents(folder)))
  for entry, ref in zip(meta['names'], golden.box_downsize(imageio.to_uint8(x), factor)):
    Image.fromarray(ref).save(folder / entry['png'])


def test_golden_machinery_with_official_architecture_stand_in(official_standin, tmp_path):
  """A TF pickle of the official architecture (random weights, 16x16) through the same loader as the real
  test, the shipped latents, references made by the documented pipeline: the right generator passes, a
  perturbed one (ToRGB bias +0.1, a 12.75-level offset) fails."""
  gen = load_any(str(official_standin))
  assert pggan.feature_shape(gen.config, 3) == (8, 8, 512)
  _stand_in_golden(gen, tmp_path / 'golden')
  scores = golden.check_generator(gen, tmp_path / 'golden')
  assert set(scores) == {'image_8', 'image_11', 'image_14', 'image_23'}
  assert min(scores.values()) > 60, scores  # identical up to float noise of two jit paths
  params = jax.tree.map(lambda a: a, gen.params)
  params['ToRGB']['bias'] = params['ToRGB']['bias'] + 0.1
  perturbed = golden.check_generator(pggan.Generator(gen.config, params), tmp_path / 'golden')
  assert max(perturbed.values()) < golden.MIN_PSNR_DB, perturbed


def test_golden_errors(tiny_generator, tmp_path):
  with pytest.raises(
    ValueError, match=r'references of a 1024x1024 generator with z 512, got 32x32 with z 64'
  ):
    golden.check_generator(tiny_generator, GOLDEN / 'celebahq')
  with pytest.raises(ValueError, match=r'generated images must be \(2, 1024, 1024, 3\)'):
    golden.golden_psnr(np.zeros((2, 256, 256, 3)), GOLDEN / 'celebahq', indices=[0, 1])
  with pytest.raises(ValueError, match=r'indices must lie in \[0, 4\), got \[4\]'):
    golden.golden_psnr(np.zeros((1, 1024, 1024, 3)), GOLDEN / 'celebahq', indices=[4])
  with pytest.raises(FileNotFoundError, match='is not a golden folder: missing'):
    golden.load_meta(tmp_path)
  with pytest.raises(ValueError, match='not a multiple of the downsizing factor 4'):
    golden.box_downsize(np.zeros((6, 6, 3), np.uint8), 4)
