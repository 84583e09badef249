"""`python -m launch.invert` end to end: outputs, summary table, exit statuses, flag checks."""

import json
import os
import pathlib
import subprocess

import numpy as np
from PIL import Image

from tests.test_invert_job import REPO  # noqa: F401
from tests.test_invert_job import assets  # noqa: F401
from tests.test_invert_job import cli_args  # noqa: F401
from tests.test_invert_job import make_config  # noqa: F401
from tests.test_invert_job import write_images  # noqa: F401


def _run(args):
  return subprocess.run(args, cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=300)


def test_cli_outputs_table_and_exit_status(assets, tmp_path):  # noqa: F811
  d = tmp_path / 'in'
  write_images(d / 'a', 2)
  write_images(d / 'b', 1)  # b/img000.png has the same file name as a/img000.png
  (d / 'broken.png').write_bytes(b'')
  (d / 'note.png').write_text('not an image')
  config = make_config(assets, d, tmp_path / 'out', iterations=2)
  p = _run(cli_args(config))
  assert p.returncode == 1, p.stderr[-3000:]  # some images failed
  out = pathlib.Path(config.job.output_dir)
  for stem in ('a__img000', 'a__img001', 'b__img000'):  # no overwrite between a/ and b/
    assert (out / f'{stem}.png').is_file() and (out / f'{stem}.npz').is_file()
    assert np.asarray(Image.open(out / f'{stem}.png')).shape == (16, 16, 3)
  with np.load(out / 'a__img000.npz') as z:
    assert set(z.files) >= {'codes', 'weights', 'masks', 'config', 'loss_history', 'key', 'name'}
    assert str(z['name']) == 'a/img000.png'
  recs = {json.loads(x)['name']: json.loads(x) for x in (out / 'manifest.jsonl').read_text().splitlines()}
  assert set(recs) == {'a/img000.png', 'a/img001.png', 'b/img000.png', 'broken.png', 'note.png'}
  assert set(recs['a/img000.png']) >= {'name', 'status', 'psnr', 'ssim', 'seconds', 'error'}
  lines = p.stdout.splitlines()
  assert lines[0].split() == ['name', 'status', 'psnr', 'ssim', 'sec', 'error']
  assert any(
    line.startswith('broken.png') and f'{d}/broken.png: empty file (0 bytes)' in line for line in lines
  )
  assert any(line.startswith('note.png') and 'not an image Pillow can identify' in line for line in lines)
  assert 'total 5: ok 3, failed 2, pending 0' in lines[-1]
  assert json.loads((out / 'summary.json').read_text())['failed'] == 2

  # A conflicting --method and --config is a usage error (before any work).
  bad = [a for a in cli_args(config) if not a.startswith('--method')] + ['--method=mganprior']
  p = _run(bad)
  assert p.returncode == 2 and '--method=mganprior conflicts with the config' in p.stderr
  # The same output directory with a changed configuration is refused (exit 2), naming the change;
  # the presets path (no --config) builds the same config otherwise (only lr differs).
  p = _run(
    [a for a in cli_args(config, config_file=False) if not a.startswith('--config.optim.lr')]
    + ['--config.optim.lr=0.5']
  )
  assert p.returncode == 2, p.stderr[-2000:]
  assert 'config.optim.lr: 0.05 -> 0.5' in p.stderr and '--overwrite_config' in p.stderr
  # Old spellings still work (a warning names the new one): the same configuration, nothing to redo.
  old = [a for a in cli_args(config) if not a.startswith(('--config.', '--iterations'))]
  old += [
    '--config.perceptual_weight=0',
    '--config.iterations=2',
    '--lr=0.05',
    '--num_workers',
    '2',
    '--log_every_s=0',
    '--nolpips',
    '--force',
  ]
  p = _run(old)
  assert p.returncode == 1, p.stderr[-3000:]  # the two broken inputs are final errors
  assert "config key 'perceptual_weight' is deprecated: use 'loss.perceptual_weight'" in p.stderr
  assert '--lr is deprecated: use --config.optim.lr' in p.stderr
  assert '--nolpips is deprecated: use --config.job.lpips' in p.stderr
  assert 'total 5: ok 3, failed 2, pending 0' in p.stdout and 'different configuration' not in p.stderr
  # Removed keys and flags of other commands are usage errors naming them.
  p = _run(cli_args(config) + ['--config.num_subspaces=6'])
  assert p.returncode == 2 and "'num_subspaces' no longer exists" in p.stderr
  p = _run(cli_args(config) + ['--affinity=dsc'])
  assert p.returncode == 2 and '--affinity is not a flag of this command' in p.stderr
