"""launch.generate: images.npy equals the library's G(z); one PNG per sample plus a grid."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from absl import app
from PIL import Image

from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import images as imageio
from tests.cli_util import run_cli_in_process

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def converted(tiny_generator, tmp_path_factory):
  path = tmp_path_factory.mktemp('gen') / 'ckpt'
  checkpoints.save_generator(path, tiny_generator.config, tiny_generator.params, meta={'format': 'test'})
  return path


def _run_in_process(argv):
  from launch import generate

  run_cli_in_process(generate.main, argv)


def test_generate_cli_writes_images_equal_to_library(converted, tiny_generator, tmp_path):
  z = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
  np.save(tmp_path / 'z.npy', z)
  out = tmp_path / 'out'
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'launch.generate',
      f'--generator={converted}',
      f'--latents={tmp_path / "z.npy"}',
      f'--output_dir={out}',
      '--batch_size=2',
    ],
    cwd=REPO,
    env=dict(os.environ, JAX_PLATFORMS='cpu'),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  images = np.load(out / 'images.npy')
  assert images.dtype == np.float32 and images.shape == (5, 32, 32, 3)
  want = np.asarray(tiny_generator(z))
  assert np.max(np.abs(images - want)) <= 1e-5
  np.testing.assert_array_equal(np.load(out / 'latents.npy'), z)
  assert sorted(p.name for p in out.glob('sample_*.png')) == [f'sample_{i:05d}.png' for i in range(5)]
  for i in range(5):
    np.testing.assert_array_equal(
      np.asarray(Image.open(out / f'sample_{i:05d}.png')), imageio.to_uint8(images[i])
    )
  grid = np.asarray(Image.open(out / 'grid.png'))
  assert grid.shape == (2 * 32 + 2, 3 * 32 + 2 * 2, 3)  # 5 samples: 3 columns, 2 rows, 2-pixel padding
  np.testing.assert_array_equal(grid[:32, 34:66], imageio.to_uint8(images[1]))


def test_generate_num_samples_seeded_and_batch_independent(converted, tiny_generator, tmp_path):
  _run_in_process(
    [
      f'--generator={converted}',
      '--num_samples=3',
      '--seed=4',
      f'--output_dir={tmp_path / "a"}',
      '--batch_size=3',
      '--nopngs',
    ]
  )
  _run_in_process(
    [
      f'--generator={converted}',
      '--num_samples=3',
      '--seed=4',
      f'--output_dir={tmp_path / "b"}',
      '--batch_size=2',
      '--nopngs',
    ]
  )
  a, b = np.load(tmp_path / 'a' / 'images.npy'), np.load(tmp_path / 'b' / 'images.npy')
  np.testing.assert_allclose(a, b, atol=1e-5)
  z = np.load(tmp_path / 'a' / 'latents.npy')
  assert z.shape == (3, 64) and 0.5 < z.std() < 1.5
  np.testing.assert_allclose(a, tiny_generator(z), atol=1e-5)
  assert not list((tmp_path / 'a').glob('sample_*.png')) and (tmp_path / 'a' / 'grid.png').exists()


@pytest.mark.parametrize(
  'latents,message',
  [
    (np.zeros((2, 63), np.float32), r'z\.npy: expected shape \(N, 64\) for this generator, got \(2, 63\)'),
    (np.zeros((2, 3, 64), np.float32), r'got \(2, 3, 64\)'),
    (np.full((1, 64), np.nan, np.float32), 'finite'),
  ],
)
def test_generate_bad_latents_named(latents, message, converted, tmp_path):
  np.save(tmp_path / 'z.npy', latents)
  with pytest.raises(app.UsageError, match=message):  # one line, exit status 2 (tests/test_hostile_*)
    _run_in_process(
      [f'--generator={converted}', f'--latents={tmp_path / "z.npy"}', f'--output_dir={tmp_path}']
    )


def test_generate_single_latent_vector(converted, tiny_generator, tmp_path):
  z = np.random.default_rng(1).standard_normal(64).astype(np.float32)
  np.save(tmp_path / 'z.npy', z)
  _run_in_process(
    [f'--generator={converted}', f'--latents={tmp_path / "z.npy"}', f'--output_dir={tmp_path / "o"}']
  )
  np.testing.assert_allclose(np.load(tmp_path / 'o' / 'images.npy'), tiny_generator(z[None]), atol=1e-5)


def test_generate_output_is_quiet(tmp_path):
  """Without JAX_PLATFORMS, jax probes its other backends (libtpu when the tpu extra is installed): the
  command's output is its progress and result lines only (pmsfc_jax/jobs/logs.py)."""
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  proc = subprocess.run(
    [sys.executable, '-m', 'launch.generate', '--generator=demo', '--num_samples=2', f'--output_dir={tmp_path}'],
    cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = (proc.stdout + proc.stderr).splitlines()
  assert [line for line in lines if re.search(r'(?i)\btpu\b|libtpu|initialize backend', line)] == []
  assert any('wrote 2 images of 32x32' in line for line in lines)
