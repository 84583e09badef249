"""launch.evaluate: pairing rule, CSV / markdown output, problems listed, size mismatch, --resize."""

import csv
import io
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from etils import epath

from pmsfc_jax.evaluation import evaluate as evaluation
from pmsfc_jax.evaluation import metrics
from pmsfc_jax.io import images as imageio

REPO = pathlib.Path(__file__).resolve().parents[1]


def _names(paths):
  return [p.name for p in paths]


def test_pairing_rule(tmp_path):
  refs = [
    epath.Path(tmp_path / n) for n in ['1.png', '1_01.png', 'a.png', 'b.png', 'c.png', 'd.png', '10.png']
  ]
  cands = [
    epath.Path(tmp_path / n)
    for n in [
      '1_inv.png',
      '1_01_inv.png',
      'a.jpg',
      'b_x.png',
      'b-y.png',
      'c_inv.png',
      'c.png',
      'zz.png',
      '10-result.png',
    ]
  ]
  pairs, unmatched = evaluation.pair_files(refs, cands)
  got = {p.reference.name: (p.candidate.name if p.candidate else None, p.status) for p in pairs}
  assert got == {
    '1.png': ('1_inv.png', 'ok'),
    '1_01.png': ('1_01_inv.png', 'ok'),  # longest stem wins over '1'
    'a.png': ('a.jpg', 'ok'),
    'b.png': (None, 'ambiguous: b_x.png, b-y.png'),
    'c.png': ('c.png', 'ok'),  # exact stem preferred over c_inv.png
    'd.png': (None, 'missing candidate'),
    '10.png': ('10-result.png', 'ok'),  # '10-result' does not belong to '1'
  }
  assert _names(unmatched) == ['zz.png']


@pytest.fixture()
def folders(tmp_path, public_images):
  ref, cand = tmp_path / 'ref', tmp_path / 'cand'
  ref.mkdir(), cand.mkdir()
  faces = ['1_01.png', '3_01.png', '5_01.png', '8_01.png']
  imgs = {n: imageio.load_image(public_images[p], size=32) for n, p in zip(faces, public_images)}
  for n, x in imgs.items():
    imageio.save_image(ref / n, x)
  rng = np.random.default_rng(0)
  imageio.save_image(
    cand / '1_01_inv.png', np.clip(imgs['1_01.png'] + rng.normal(0, 0.1, (32, 32, 3)), -1, 1)
  )
  imageio.save_image(cand / '3_01-result.png', imgs['3_01.png'][::-1])
  (cand / '5_01.png').write_bytes(b'not an image')
  return ref, cand


def test_evaluate_values_and_problems(folders):
  ref, cand = folders
  pairs, unmatched = evaluation.evaluate(ref, cand, ['psnr', 'ssim', 'auc'])
  status = {p.reference.name: p.status for p in pairs}
  assert status['5_01.png'].startswith('unreadable candidate: not an image')
  assert status['8_01.png'] == 'missing candidate'
  assert unmatched == []
  p = pairs[0]
  r = metrics.to_unit(imageio.load_image(ref / '1_01.png'))
  c = metrics.to_unit(imageio.load_image(cand / '1_01_inv.png'))
  assert p.values['psnr'] == pytest.approx(float(metrics.psnr(r, c)[0]), abs=1e-4)
  assert p.values['ssim'] == pytest.approx(float(metrics.ssim(r, c)[0]), abs=1e-5)
  rows = list(csv.reader(io.StringIO(evaluation.to_csv(pairs, ['psnr', 'ssim', 'auc']))))
  assert rows[0] == ['reference', 'candidate', 'width', 'height', 'resized', 'status', 'psnr', 'ssim', 'auc']
  assert [r[0] for r in rows[1:]] == ['1_01.png', '3_01.png', '5_01.png', '8_01.png', 'mean']
  assert rows[-1][1] == '2 pairs'
  assert float(rows[-1][6]) == pytest.approx(np.mean([float(rows[1][6]), float(rows[2][6])]), abs=1e-4)
  assert rows[3][6] == ''  # unreadable: no value


def test_size_mismatch_names_both_files_unless_resize(folders):
  ref, cand = folders
  small = imageio.load_image(ref / '8_01.png', size=24)
  imageio.save_image(cand / '8_01.png', small)
  with pytest.raises(evaluation.SizeMismatchError) as e:
    evaluation.evaluate(ref, cand, ['psnr'])
  assert str(e.value) == (
    f'size mismatch: reference {ref / "8_01.png"} is 32x32 but candidate '
    f'{cand / "8_01.png"} is 24x24 (pass --resize to resize candidates to the '
    'reference size)'
  )
  pairs, _ = evaluation.evaluate(ref, cand, ['psnr'], resize=True)
  p = [p for p in pairs if p.reference.name == '8_01.png'][0]
  assert p.resized and p.size == (32, 32) and 15 < p.values['psnr'] < 60


def test_cli_end_to_end(folders, tmp_path):
  ref, cand = folders
  out = tmp_path / 'res' / 'metrics.csv'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'launch.evaluate',
      f'--reference_dir={ref}',
      f'--candidate_dir={cand}',
      '--metrics=psnr,lpips_vgg',
      f'--output={out}',
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
  )
  assert proc.returncode == 0, proc.stderr
  assert '| image | psnr | lpips_vgg |' in proc.stdout
  assert '| **mean (2)** |' in proc.stdout
  assert '- 5_01.png: unreadable candidate: not an image' in proc.stdout
  assert '- 8_01.png: missing candidate' in proc.stdout
  rows = list(csv.DictReader(out.open()))
  assert [r['reference'] for r in rows] == ['1_01.png', '3_01.png', '5_01.png', '8_01.png', 'mean']
  assert 0 < float(rows[1]['lpips_vgg']) < 1  # a flipped face is perceptually far
  bad = subprocess.run(
    [
      sys.executable,
      '-m',
      'launch.evaluate',
      f'--reference_dir={ref}',
      f'--candidate_dir={cand}',
      '--metrics=psnr,fid',
      f'--output={out}',
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
  )
  assert bad.returncode == 2 and "unknown metric(s) ['fid']" in bad.stderr
