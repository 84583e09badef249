"""`python -m launch.discover` end to end with tiny settings (subprocess, as users run it)."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from pmsfc_jax.core import clustering
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import subspaces
from pmsfc_jax.models import pggan
from tests.conftest import OFFICIAL

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(*args, check=True):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
  proc = subprocess.run(
    [sys.executable, '-m', 'launch.discover', *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  if check and proc.returncode != 0:
    raise AssertionError(f'launch.discover failed ({proc.returncode}):\n{proc.stderr[-4000:]}')
  return proc


@pytest.fixture(scope='module')
def gen_dir(tmp_path_factory):
  cfg = pggan.GeneratorConfig(resolution=16, z_dim=32, fmaps_base=512, fmaps_max=32)
  path = tmp_path_factory.mktemp('gen') / 'generator'
  checkpoints.save_generator(path, cfg, pggan.init_params(cfg, jax.random.key(0)))
  return path


def test_cli_trains_clusters_and_draws(gen_dir, tmp_path):
  out = tmp_path / 'out'
  proc = _run(
    '--config=launch/configs/discover.py:local',
    f'--generator={gen_dir}',
    '--layer=3',
    '--num_subspaces=3',
    '--iterations=4',
    '--batch_size=2',
    '--affinity=dsc',
    f'--output_dir={out}',
    '--seed=1',
    '--config.log_every=2',
    '--config.exchange_samples=2',
    '--config.subspace_dim=2',
  )
  assert 'step 4/4' in proc.stderr and 'steps/s, ETA' in proc.stderr
  for name in (
    'S.npy',
    'masks.npy',
    'labels.npy',
    'subspaces.json',
    'losses.png',
    'affinity_dsc.png',
    'exchange_subspace_0.png',
    'exchange_subspace_2.png',
  ):
    assert (out / name).is_file(), name
  assert (out / 'result').is_dir() and (out / 'checkpoints' / '4').is_dir()
  info = json.loads((out / 'subspaces.json').read_text())
  assert (
    info['layer'],
    info['num_subspaces'],
    info['channels'],
    info['affinity'],
    info['seed'],
    info['iterations'],
  ) == (3, 3, 32, 'dsc', 1, 4)
  sub = subspaces.load_subspaces(out)
  assert sub.masks.shape == (3, 32) and np.all(sub.masks.sum(axis=0) == 1) and np.all(sub.masks.sum(1) > 0)
  np.testing.assert_array_equal(np.diag(sub.S), 0)
  from PIL import Image

  assert Image.open(out / 'exchange_subspace_0.png').size == (2 * 96 + 2, 2 * 96 + 2)  # 2 x 2, 16 px x6


@pytest.mark.parametrize('diagonal', ['keep', 'zero'])
def test_cli_clusters_a_given_matrix_without_generator(tmp_path, diagonal):
  out = tmp_path / 'official'
  src = OFFICIAL / 'bedroom_layer3_S.npy'
  _run(
    f'--self_expressive_matrix={src}',
    '--matrix_layout=official',
    '--num_subspaces=6',
    '--affinity=dsc',
    '--seed=2',
    f'--output_dir={out}',
    *([] if diagonal == 'keep' else ['--config.cluster.diagonal=zero']),  # 'keep' is the default
  )
  sub = subspaces.load_subspaces(out)
  assert sub.masks.shape == (6, 512) and sub.meta['source'].endswith('bedroom_layer3_S.npy')
  assert (sub.meta['diagonal'], sub.meta['alpha'], sub.meta['rho'], sub.meta['subspace_dim']) == (
    diagonal,
    2.0,
    0.2,
    6,
  )
  assert (out / 'affinity_dsc.png').is_file()
  assert not list(out.glob('exchange_*.png')) and not (out / 'losses.png').exists()
  M = np.load(src)
  S = clustering.from_official_layout(M, diagonal)  # S.npy: the matrix as clustered, paper layout
  np.testing.assert_array_equal(sub.S, S.astype(np.float32))
  labels, _ = clustering.cluster(S, 6, 'dsc', seed=2, diagonal=diagonal)
  np.testing.assert_array_equal(sub.labels, labels)


def test_cli_rejects_a_matrix_that_does_not_fit_the_generator(gen_dir, tmp_path):
  proc = _run(
    f'--generator={gen_dir}',
    f'--self_expressive_matrix={OFFICIAL / "bedroom_layer3_S.npy"}',
    f'--output_dir={tmp_path / "x"}',
    check=False,
  )
  assert proc.returncode != 0
  assert 'is 512x512 but the generator has 32 channels at the chosen layer' in proc.stderr
