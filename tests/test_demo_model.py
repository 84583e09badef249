"""The shipped demo generator (issue #7): loads by name from an installed package and reproduces the
committed sample grid ``docs/demo_samples.png``.

These tests need the committed asset ``pmsfc_jax/assets/demo/generator``: they fail (never skip) when it
is missing. Tolerance for the grid: the grid is the uint8 quantisation of G(z) for
``z = normal(key(0), (16, z_dim))``; regenerated images must agree to <= 1 uint8 level on >= 99.9 % of
the values (float rounding across CPUs / XLA versions can flip a value sitting on a rounding boundary)
and never by more than 3 levels.
"""

import pathlib
import shutil
import subprocess
import sys
import zipfile

import jax
import numpy as np
from PIL import Image

from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import images as imageio

REPO = pathlib.Path(__file__).resolve().parents[1]
ASSET = REPO / 'pmsfc_jax' / 'assets' / 'demo' / 'generator'
GRID = REPO / 'docs' / 'demo_samples.png'
NUM, NCOLS, PAD, UPSCALE = 16, 8, 2, 4


def _require_asset():
  assert (ASSET / 'config').is_dir() and (ASSET / 'params').is_dir(), (
    f'the shipped demo generator {ASSET} is missing: it is part of the package (issue #7)'
  )
  assert GRID.is_file(), f'the committed sample grid {GRID} is missing'


def _grid_cells(grid: np.ndarray, res: int) -> np.ndarray:
  """Cells of a ``jobs.train_pggan.write_demo_samples`` grid (nearest-upscaled by UPSCALE) at native size."""
  cells = []
  for i in range(NUM):
    r, c = divmod(i, NCOLS)
    y, x = r * (res + PAD) * UPSCALE, c * (res + PAD) * UPSCALE
    cells.append(grid[y : y + res * UPSCALE : UPSCALE, x : x + res * UPSCALE : UPSCALE])
  return np.stack(cells)


def test_demo_generator_reproduces_committed_grid():
  _require_asset()
  g = checkpoints.load_generator('demo')
  cfg = g.config
  assert (cfg.resolution, cfg.z_dim) == (32, 512)
  assert g.feature_shape(3) == (8, 8, 64)  # PmSFC's layer 3
  grid = np.asarray(Image.open(GRID).convert('RGB'))
  rows = -(-NUM // NCOLS)
  assert grid.shape == (
    UPSCALE * (rows * (cfg.resolution + PAD) - PAD),
    UPSCALE * (NCOLS * (cfg.resolution + PAD) - PAD),
    3,
  )
  want = _grid_cells(grid, cfg.resolution).astype(np.int16)
  z = jax.random.normal(jax.random.key(0), (NUM, cfg.z_dim))  # launch.generate --seed=0 latents
  got = imageio.to_uint8(np.clip(np.asarray(jax.jit(g.__call__)(z)), -1, 1)).astype(np.int16)
  diff = np.abs(got - want)
  assert diff.max() <= 3, diff.max()
  assert np.mean(diff <= 1) >= 0.999, np.mean(diff <= 1)
  # Samples differ from each other (not a collapsed generator) and are not flat.
  assert np.std(got.astype(np.float32), axis=(1, 2, 3)).min() > 10
  assert np.abs(got[0] - got[1]).mean() > 5


def _build_wheel(tmp_path: pathlib.Path) -> pathlib.Path:
  """A non-editable wheel of the package, built from a copy of the sources (keeps the tree clean)."""
  src = tmp_path / 'src'
  src.mkdir()
  shutil.copy(REPO / 'setup.py', src / 'setup.py')
  for pkg in ('pmsfc_jax', 'launch', 'weights_conversion'):
    if (REPO / pkg).is_dir():
      shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
  out = tmp_path / 'wheel'
  subprocess.run(
    [
      sys.executable,
      '-m',
      'pip',
      'wheel',
      '--no-deps',
      '--no-build-isolation',
      '-q',
      '-w',
      str(out),
      str(src),
    ],
    check=True,
    capture_output=True,
    timeout=300,
  )
  (wheel,) = out.glob('pmsfc_jax-*.whl')
  return wheel


def test_loads_by_name_from_installed_wheel(tmp_path):
  _require_asset()
  wheel = _build_wheel(tmp_path)
  names = zipfile.ZipFile(wheel).namelist()
  shipped = [n for n in names if n.startswith('pmsfc_jax/assets/demo/generator/')]
  want = [str(p.relative_to(REPO)) for p in ASSET.rglob('*') if p.is_file()]
  assert sorted(want) == sorted(shipped), f'wheel misses assets: {sorted(set(want) - set(shipped))}'
  site = tmp_path / 'site'
  zipfile.ZipFile(wheel).extractall(site)
  code = (
    'import jax, numpy as np, pmsfc_jax; from pmsfc_jax.io import checkpoints; '
    'g = checkpoints.load_generator("demo"); '
    'img = g(jax.random.normal(jax.random.key(0), (2, g.config.z_dim))); '
    'print(pmsfc_jax.__file__); print(g.config.resolution, img.shape, float(np.abs(img).mean()))'
  )
  env = {'PYTHONPATH': str(site), 'JAX_PLATFORMS': 'cpu', 'PATH': '/usr/bin:/bin'}
  res = subprocess.run(
    [sys.executable, '-c', code], cwd='/tmp', env=env, capture_output=True, text=True, timeout=300
  )
  assert res.returncode == 0, res.stderr[-3000:]
  lines = res.stdout.strip().splitlines()
  assert lines[-2].startswith(str(site)), lines  # the installed copy, not the repository
  assert lines[-1].startswith('32 (2, 32, 32, 3)'), lines
