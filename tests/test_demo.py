"""The main job (launch.demo) and the reproduction script (launch.reproduce) end to end, few iterations."""

import dataclasses
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
  scale, side, line, pad = 128 // 16, 128, 20, 4  # plots.titled_grid: cells >= 128 px, 14 px text
  assert grid.shape == (line + 2 * (side + line + pad) + pad, 3 * (side + pad) + pad, 3)
  # First column: the targets as decoded by the project's image pipeline.
  target0 = imageio.to_uint8(imageio.load_image(faces[0], 16))
  np.testing.assert_array_equal(grid[line : line + side : scale, pad : pad + side : scale], target0)
  # A title above every column; a PSNR label under each result, none under the targets.
  col = lambda c: slice(pad + c * (side + pad), pad + c * (side + pad) + side)
  assert all(grid[:line, col(c)].min() < 100 for c in range(3))
  labels = [grid[line + side : 2 * line + side, col(c)].min() for c in range(3)]
  assert labels[0] == 255 and max(labels[1:]) < 100, labels
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


def _faces(folder: pathlib.Path, gen, n: int) -> list[pathlib.Path]:
  """``n`` face files the generator produces (PNG), so the reproduction needs no data outside the repo."""
  folder.mkdir(parents=True, exist_ok=True)
  z = jax.random.normal(jax.random.key(7), (n, gen.config.z_dim))
  faces = np.clip(np.asarray(jax.jit(lambda g, z: g(z))(gen, z)), -1, 1)
  paths = [folder / f'{9001 + i:06d}.png' for i in range(n)]
  for p, f in zip(paths, faces):
    imageio.save_image(p, f)
  return paths


def test_reproduce_rows_tables_wins_and_resume(tiny_assets, tmp_path, monkeypatch):
  gen = checkpoints.load_generator(tiny_assets / 'gen')
  _faces(tmp_path / 'faces', gen, 3)
  cfg = _local_config(
    presets.reproduce, tiny_assets, tmp_path / 'out', **{'job.images': str(tmp_path / 'faces')}
  )
  cfg = config.override(cfg, {'reproduce.num_images': 2, 'reproduce.rows': config.REPRODUCE_ROWS})
  blob = reproduce.run(cfg)
  assert blob['images'] == ['009001', '009002']  # the first --num_images (2) of the sorted list
  results = blob['results']
  assert set(results) == set(config.TASKS)
  for task, by_row in results.items():
    assert sorted(by_row) == sorted(config.REPRODUCE_ROWS)
    for row, res in by_row.items():
      assert res['identity']['images'] == ['009001', '009002']
      assert set(res['metrics']) == set(reproduce.task_metrics(task))
      # LPIPS-AlexNet is NaN on these 16x16 images (its pooling leaves no pixels); finite at 32x32
      # (test_reproduce_command_runs_anywhere).
      assert all(np.isfinite(v).all() for m, v in res['metrics'].items() if m != 'lpips_alex')
      want = presets.reproduce_row(cfg, row, task).optim.iterations
      assert (
        res['iterations'] == want == {'mganprior': 3, 'pmsfc_paper': 3, 'pmsfc_paper_full': 3}.get(row, 2)
      )
  assert results['reconstruct']['pmsfc_fast_eq9'] is results['reconstruct']['pmsfc_fast']  # same settings
  assert results['colorize']['pmsfc_fast_eq9']['identity'] != results['colorize']['pmsfc_fast']['identity']
  assert 0 <= np.min(results['colorize']['pmsfc_fast']['metrics']['auc']) <= 100
  table = (tmp_path / 'out' / 'reproduction.md').read_text()
  assert (
    table.count('| 1 | mGANprior, its own settings') == 4
    and '| 5 | PmSFC, shared fast setting, Eq. 9' in table
  )
  assert table.count('| 1 vs 2 | 2 |') == table.count('| 3 vs 4 | 2 |') == table.count('| 4 vs 5 | 2 |') == 4
  assert (
    table.count('| 1 vs 6 | 2 |') == 4 and table.count("| 6 | PmSFC, the paper's setting and its 7000") == 4
  )
  assert 'LPIPS-Alex ↓' in table and 'AuC (%) ↑' in table
  for task in results:
    assert (tmp_path / 'out' / f'{task}_grid.png').exists()

  # A second run resumes every finished row (no inversion at all) and writes the same numbers.
  def fail(*args, **kwargs):
    raise AssertionError('a finished row was recomputed')

  monkeypatch.setattr(reproduce.compare, 'invert_one', fail)
  again = reproduce.run(cfg)
  assert again['results'] == json.loads(json.dumps(results))
  # Another setting of one row recomputes that row only.
  calls = []
  monkeypatch.setattr(reproduce, 'run_row', lambda *a, **k: calls.append(a[1].task.name) or _fake_row(a))
  reproduce.run(config.override(cfg, {'reproduce.inpaint_perceptual_weight': 0.5}))
  assert calls == ['inpaint', 'inpaint', 'inpaint']  # rows 3-5 of inpainting use that weight


def _fake_row(args):
  faces = args[4]
  names = reproduce.task_metrics(args[1].task.name)
  return {'metrics': {m: [0.0] * len(faces) for m in names}, 'seconds': 0.0, 'delivered': faces}


def test_reproduce_wins_counts():
  a = {
    'identity': {'images': ['x', 'y', 'z']},
    'metrics': {'psnr': [20.0, 30.0, 25.0], 'lpips_vgg': [0.1, 0.5, 0.2]},
  }
  b = {'identity': {'images': ['z', 'x']}, 'metrics': {'psnr': [25.0, 21.0], 'lpips_vgg': [0.3, 0.2]}}
  assert reproduce.wins(a, b, 'psnr') == (0, 1, 1)  # x: b better; z: tie; y: not run by b
  assert reproduce.wins(a, b, 'lpips_vgg') == (2, 0, 0)  # lower is better


@pytest.mark.parametrize('new,reused', [(None, True), ('float32', True), ('bfloat16', False)])
def test_reproduce_rows_of_before_a_later_setting_are_reused(tmp_path, new, reused):
  """A row saved before ``model.compute_dtype`` existed counts as float32 (fingerprint.LATER_SETTINGS)."""
  rcfg = presets.reproduce_row(presets.reproduce('local'), 'pmsfc_fast', 'inpaint')
  ident = {**reproduce.identity(rcfg, 'generator sha', 16, np.eye(2, dtype=bool)), 'images': ['a', 'b']}
  old = json.loads(json.dumps(ident))
  del old['settings']['model']['compute_dtype']
  if new is not None:
    old['settings']['model']['compute_dtype'] = new
  np.save(tmp_path / 'row.npy', np.zeros((2, 4, 4, 3), np.float32))
  (tmp_path / 'row.json').write_text(json.dumps({'identity': old, 'seconds': 1.0}))
  done = reproduce._load_row(tmp_path / 'row', ident)
  assert (done is not None) == reused
  if reused:
    assert done['seconds'] == 1.0


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


def _launch(args, cwd, timeout=900):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PMSFC_SHARED=str(cwd / 'no_shared_here'))
  env.pop('XLA_FLAGS', None)
  return subprocess.run(
    [sys.executable, '-m', *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
  )


def test_reproduce_command_runs_anywhere(tmp_path):
  """Issue #14: `launch.reproduce --images=... --num_images=2` end to end outside the repository, with
  no ../shared (faces made by the shipped demo generator; the default inpainting mask is generated)."""
  assert not (tmp_path.parent / 'shared').exists()
  _faces(tmp_path / 'faces', checkpoints.load_generator('demo'), 3)
  config_file = f'{REPO}/launch/configs/reproduce.py:local'
  proc = _launch(
    ['launch.reproduce', f'--config={config_file}', '--images=faces', '--num_images=2', '--output_dir=out'],
    tmp_path,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  blob = json.loads((tmp_path / 'out' / 'reproduction.json').read_text())
  assert blob['images'] == ['009001', '009002'] and blob['config']['task']['mask'] == ''
  for task, by_row in blob['results'].items():
    assert sorted(by_row) == sorted(config.REPRODUCE_ROWS[:5])  # the default rows
    for res in by_row.values():
      assert all(np.isfinite(v).all() for v in res['metrics'].values()), task  # LPIPS-Alex too at 32x32
  assert '**inpainting**' in proc.stdout and '| 4 vs 5 | 2 |' in proc.stdout
  # Without --images: one line saying what to pass, exit status 2 (usage), before any work.
  proc = _launch(['launch.reproduce'], tmp_path, timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [f'launch.reproduce: {reproduce.NO_IMAGES}']
  assert 'img_align_celeba/009001.jpg-009100.jpg' in reproduce.NO_IMAGES


def test_no_default_points_outside_the_repository():
  """Issue #14: no preset names a path outside the package, and no source defaults to ../shared."""

  def strings(obj):
    if dataclasses.is_dataclass(obj):
      for f in dataclasses.fields(obj):
        yield from strings(getattr(obj, f.name))
    elif isinstance(obj, str):
      yield obj

  made = [presets.invert(f'{m},{t}') for m in config.METHODS for t in config.TASKS]
  made += [presets.demo(), presets.reproduce(), presets.discover(), presets.train_pggan()]
  made += [presets.demo('local'), presets.reproduce('local'), presets.train_pggan('local')]
  for cfg in made:
    for value in strings(cfg):
      assert '..' not in value and not value.startswith('/') and 'shared' not in value, value
  for folder in ('pmsfc_jax', 'launch'):
    for path in (REPO / folder).rglob('*.py'):
      text = path.read_text()
      assert 'PMSFC_SHARED' not in text and "/ 'shared'" not in text, path
