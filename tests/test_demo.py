"""The main job (launch.demo) and the reproduction script (launch.reproduce) end to end, few iterations."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from pmsfc_jax.core import config
from pmsfc_jax.core import presets
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import images as imageio
from pmsfc_jax.io import subspaces
from pmsfc_jax.jobs import demo
from pmsfc_jax.jobs import reproduce
from pmsfc_jax.models import pggan

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def tiny_assets(tmp_path_factory):
  """A 16x16 random generator and a random partition of its layer-3 channels into 3 subspaces."""
  root = tmp_path_factory.mktemp('demo_assets')
  cfg = pggan.GeneratorConfig(resolution=16, z_dim=16, fmaps_base=256, fmaps_max=16)
  checkpoints.save_generator(root / 'gen', cfg, pggan.init_params(cfg, jax.random.key(3)))
  labels = np.arange(16) % 3
  subspaces.write_subspaces(root / 'subspaces', np.zeros((16, 16), np.float32), labels, 3, layer=3)
  return root


def _local_config(preset, tiny_assets, out, **values):
  return config.override(
    preset('local'),
    {
      'model.generator': str(tiny_assets / 'gen'),
      'model.subspaces': str(tiny_assets / 'subspaces'),
      'job.output_dir': str(out),
      **values,
    },
  )


def test_demo_on_user_images_writes_grid_and_table(tiny_assets, tmp_path, shared_data):
  faces = sorted((shared_data / 'celeba_small').glob('00900[12].jpg'))
  cfg = _local_config(
    presets.demo,
    tiny_assets,
    tmp_path / 'out',
    **{'job.images': str(shared_data / 'celeba_small' / '00900[12].jpg')},
  )
  summary = demo.run(cfg)
  assert [r['image'] for r in summary['rows']] == [f.stem for f in faces] + ['**mean**']
  for row in summary['rows']:
    for method in ('mganprior', 'pmsfc'):
      assert np.isfinite(row[f'{method} psnr']) and -1 <= row[f'{method} ssim'] <= 1
  grid = np.asarray(Image.open(tmp_path / 'out' / 'demo_grid.png'))
  scale = 128 // 16
  assert grid.shape == ((2 * 18 - 2) * scale, (3 * 18 - 2) * scale, 3)
  # First column: the targets as decoded by the project's image pipeline.
  target0 = imageio.to_uint8(imageio.load_image(faces[0], 16))
  np.testing.assert_array_equal(grid[: 16 * scale : scale, : 16 * scale : scale], target0)
  table = (tmp_path / 'out' / 'metrics.md').read_text()
  assert '| image | mganprior psnr | mganprior ssim | pmsfc psnr | pmsfc ssim |' in table


def test_astronaut_face_is_the_scikit_image_photo():
  from skimage import data as skdata

  face = demo.astronaut_face(32)
  assert face.shape == (32, 32, 3) and face.dtype == np.float32
  top, bottom, left, right = demo.ASTRONAUT_FACE_BOX
  crop = skdata.astronaut()[top:bottom, left:right].astype(np.float32)
  small = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize((32, 32), Image.LANCZOS), np.float32)
  np.testing.assert_allclose(imageio.to_uint8(face), small, atol=1)


def test_reproduce_writes_table_for_every_task(tiny_assets, tmp_path, shared_data):
  cfg = _local_config(
    presets.reproduce,
    tiny_assets,
    tmp_path / 'out',
    **{
      'job.images': str(shared_data / 'celeba_small' / '009*.jpg'),
      'task.mask': str(shared_data / 'images' / 'masks' / 'mask-2.png'),
    },
  )
  blob = reproduce.run(cfg)
  assert blob['images'] == ['009001', '009002']
  results = blob['results']
  assert set(results) == {'reconstruct', 'colorize', 'super_resolve', 'inpaint'}
  for task, by_method in results.items():
    for method in ('mganprior', 'pmsfc'):
      assert set(by_method[method]) == set(reproduce.TASK_METRICS[task]) | {'seconds'}
      assert all(np.isfinite(v) for v in by_method[method].values())
  assert 0 <= results['colorize']['pmsfc']['auc'] <= 100
  table = (tmp_path / 'out' / 'reproduction.md').read_text()
  assert table.count('\n| ') == 1 + sum(len(v) for v in reproduce.TASK_METRICS.values())
  for task in results:
    assert (tmp_path / 'out' / f'{task}_grid.png').exists()


def test_main_command_runs_on_the_shipped_model(tmp_path):
  """`python -m launch.demo` (the README's main job) on the embedded default, few iterations."""
  out = tmp_path / 'demo_out'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'launch.demo',
      f'--config={REPO}/launch/configs/demo.py:local',
      f'--output_dir={out}',
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((out / 'metrics.json').read_text())
  assert summary['images'] == ['astronaut', 'generated_seed0']
  assert '| astronaut |' in proc.stdout
  assert (out / 'demo_grid.png').exists()
