"""Shared test set-up: 4 forced CPU devices (sharding tests), the data folders, tiny generators.

Data outside the repository: the shared data folder (``../shared/data`` beside the repository, or
``$PMSFC_SHARED/data``); tests that need it take the ``shared_data`` fixture and are skipped, naming the
folder, when it is absent (README "Tests"). Small data shipped with the tests: ``tests/data`` (with its
provenance, ``tests/data/README.md``).
"""

import os

# Must happen before jax initialises its backends: gives sharding tests 4 CPU devices.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pathlib

import jax
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get('PMSFC_SHARED', REPO.parent / 'shared'))
DATA = SHARED / 'data'
TEST_DATA = REPO / 'tests' / 'data'
# The layer-3 matrices the PmSFC authors released (tests/data/README.md).
OFFICIAL = TEST_DATA / 'official'
# The official PGGAN architecture (z 512, TF fmap_base 8192 = our fmaps_base 16384, fmaps_max 512, fused
# upsampling: G_paper's defaults) at 16x16: 512 channels at layer 3, like the real 1024 / 256 models.
OFFICIAL_STANDIN = dict(resolution=16, z_dim=512, fmaps_base=16384, fmaps_max=512, fused_scale=True)


@pytest.fixture(scope='session')
def shared_data() -> pathlib.Path:
  if not DATA.is_dir():
    pytest.skip(f'shared data folder {DATA} is absent (set PMSFC_SHARED)')
  return DATA


@pytest.fixture(scope='session')
def tiny_generator():
  """A 32x32 random-weight PGGAN with narrow channels (64), z_dim 64: fast enough for any test."""
  from pmsfc_jax.models import pggan

  cfg = pggan.GeneratorConfig(resolution=32, z_dim=64, fmaps_base=2048, fmaps_max=64)
  return pggan.Generator(cfg, pggan.init_params(cfg, jax.random.key(0)))


@pytest.fixture(scope='session')
def official_standin(tmp_path_factory) -> pathlib.Path:
  """An NVIDIA-format TF pickle ``(G, D, Gs)`` whose Gs is a random generator of the official
  architecture at 16x16 (``OFFICIAL_STANDIN``), written like ``karras2018iclr-*.pkl`` (tests/test_conversion.py
  builds the TF layout from the independent PyTorch reference): the stand-in for the real weights."""
  import numpy as np

  from tests import torch_util

  torch_util.require()  # the TF layout is built from the independent PyTorch reference
  from tests import reference_pggan_torch as ref
  from tests import test_conversion as tc

  a = OFFICIAL_STANDIN
  model = ref.random_model(a['resolution'], a['z_dim'], a['fmaps_base'], a['fmaps_max'], a['fused_scale'])
  kw = tc._static_kwargs(a['resolution'], a['z_dim'], a['fmaps_base'], a['fmaps_max'], a['fused_scale'])
  gs = tc.FakeTfNetwork(
    tc._network_state('Gs', tc.tf_variables_from_torch(model.state_dict(), a['resolution']), kw)
  )
  stub = tc.FakeTfNetwork(tc._network_state('D', [('4x4/Conv/weight', np.ones((1,), np.float32))], {}))
  path = tmp_path_factory.mktemp('official') / 'karras2018iclr-standin-16x16.pkl'
  with pytest.MonkeyPatch.context() as mp:
    tc._dump_tf_pickle(path, (stub, stub, gs), 4, 'tfutil', mp)
  return path


# Public-domain / CC0 photographs bundled in scikit-image's wheel (a dependency): natural images for
# tests that need real pixels but no particular picture (no shared data folder needed).
PUBLIC_IMAGES = ('astronaut', 'coffee', 'chelsea', 'rocket')


@pytest.fixture(scope='session')
def public_images(tmp_path_factory) -> dict[str, pathlib.Path]:
  """``{name: PNG path}`` of scikit-image's astronaut (NASA, public domain), coffee (CC0), chelsea (CC0)
  and rocket (SpaceX, public domain), written once as full-size RGB PNGs."""
  import skimage.data
  from PIL import Image

  root = tmp_path_factory.mktemp('public_images')
  out = {}
  for name in PUBLIC_IMAGES:
    out[name] = root / f'{name}.png'
    Image.fromarray(getattr(skimage.data, name)()).save(out[name])
  return out


@pytest.fixture(scope='session')
def photo_folder(public_images, tmp_path_factory):
  """16 numbered JPEGs 000001.jpg ... (quadrant crops of the public photos), laid out like aligned CelebA."""
  from PIL import Image

  folder = tmp_path_factory.mktemp('numbered')
  for i, (path, q) in enumerate((p, q) for p in public_images.values() for q in range(4)):
    with Image.open(path) as im:
      w, h = im.size
      box = ((q % 2) * w // 2, (q // 2) * h // 2, (q % 2 + 1) * w // 2, (q // 2 + 1) * h // 2)
      im.convert('RGB').crop(box).save(folder / f'{i + 1:06d}.jpg', quality=95)
  return folder
