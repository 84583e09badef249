"""The research-code examples (examples/*.py) run on the shipped demo model, as users run them."""

import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
from PIL import Image

import pmsfc_jax

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(script, *args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  proc = subprocess.run(
    [sys.executable, str(REPO / 'examples' / script), *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def test_invert_and_exchange(tmp_path):
  gen = pmsfc_jax.load_generator('demo')
  faces = np.clip(np.asarray(gen(jax.random.normal(jax.random.key(5), (2, gen.config.z_dim)))), -1, 1)
  for i, face in enumerate(faces):
    pmsfc_jax.save_image(tmp_path / 'faces' / f'face{i}.png', face)
  out = _run(
    'invert_and_exchange.py',
    f'--images={tmp_path / "faces"}',
    f'--output={tmp_path / "x.png"}',
    '--iterations=10',
  )
  first, last = map(float, re.search(r'loss ([\d.]+) -> ([\d.]+)', out).groups())
  assert last < first
  grid = np.asarray(Image.open(tmp_path / 'x.png'))
  assert grid.shape == (2 * 32 + 2, 2 * 32 + 2, 3)  # 2 x 2 exchange grid of 32x32 faces


def test_jit_vmap_objective():
  out = _run('jit_vmap_objective.py', '--steps=20', '--batch=2')
  first, last = map(float, re.search(r'objective ([\d.]+) -> ([\d.]+)', out).groups())
  assert last < 0.5 * first
