"""bench/device_check.sh --smoke runs end to end on CPU (the GPU check is then one command away).

The weights come from a --deps folder as on the device (a VGG16 .npz cut at relu3_3, written here the
way bench/pack_device_deps.sh writes it); the check must go through the job's jitted step function.
"""

import json
import math
import subprocess

import numpy as np
import pytest

from pmsfc_jax.core import config
from pmsfc_jax.core import schema
from pmsfc_jax.io import pretrained
from tests.conftest import REPO


@pytest.fixture(scope='module')
def deps(tmp_path_factory):
  folder = tmp_path_factory.mktemp('deps')
  flat = schema.flatten(pretrained.load_vgg16_params('relu3_3'))
  np.savez(folder / 'vgg16_relu3_3.npz', **{k.replace('.', '/'): np.asarray(v) for k, v in flat.items()})
  return folder


def _run(deps, out, *flags):
  return subprocess.run(
    ['bash', str(REPO / 'bench' / 'device_check.sh'), '--deps', str(deps), f'--out={out}', '--smoke', *flags],
    cwd=out,
    capture_output=True,
    text=True,
    timeout=900,
  )


def test_smoke_run_measures_every_phase(deps, tmp_path):
  r = _run(deps, tmp_path)
  assert r.returncode == 0, r.stderr[-3000:]
  result = json.loads((tmp_path / 'device_check.json').read_text())
  assert result['platform'] == 'cpu' and result['smoke']
  phases = {p['phase']: p for p in result['phases']}
  assert list(phases) == [
    'float32 batch 1',
    'bfloat16 batch 1',
    'float32 batch 1, lax.scan of 2',
    'float32 auto',
    'bfloat16 auto',
  ]
  for p in phases.values():
    assert p['seconds_per_step'] > 0 and p['compile_seconds'] > 0 and p['footprint_bytes'] > 0
    assert math.isfinite(p['mean_loss'])
    assert p['seconds_per_image'] == pytest.approx(p['seconds_per_step_per_image'] * 7000)
  assert phases['float32 batch 1, lax.scan of 2']['steps_per_call'] == 2
  assert phases['bfloat16 batch 1']['compute_dtype'] == 'bfloat16'
  # On CPU, auto keeps the job's default batch size.
  assert phases['float32 auto']['batch'] == config.Job.batch_size
  assert '| float32 batch 1 | 1 |' in r.stdout and 'device_check.json' in r.stdout


def test_phases_past_the_budget_are_skipped_and_said(deps, tmp_path):
  r = _run(deps, tmp_path, '--budget_s=0')
  assert r.returncode == 0, r.stderr[-3000:]
  result = json.loads((tmp_path / 'device_check.json').read_text())
  assert len(result['phases']) == 5
  assert all('time budget' in p['skipped'] for p in result['phases'])
