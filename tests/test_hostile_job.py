"""Issue #11 in-process: untrusted batch checkpoints, --overwrite_config, results missing on disk, refused
settings, the PSNR-inf rule, the time-bounded steps per call, and the GAN training job's SIGTERM contract.

Batch-job runs use the tiny 16x16 generator of ``tests/test_invert_job.py``.
"""

import csv
import json
import os
import pathlib
import shutil
import signal

import chex
import jax
import numpy as np
import pytest

from pmsfc_jax.core import config
from pmsfc_jax.core import gan
from pmsfc_jax.core import inversion
from pmsfc_jax.core import loops
from pmsfc_jax.evaluation import evaluate
from pmsfc_jax.io import images
from pmsfc_jax.jobs import exit_codes
from pmsfc_jax.jobs import train_pggan
from pmsfc_jax.jobs.invert import batch_state
from pmsfc_jax.jobs.invert import job
from pmsfc_jax.jobs.invert import output
from pmsfc_jax.jobs.invert import summary as summary_lib
from tests import configs
from tests.test_inversion import small  # noqa: F401
from tests.test_invert_job import assert_complete
from tests.test_invert_job import assert_same_results
from tests.test_invert_job import assets  # noqa: F401
from tests.test_invert_job import make_config
from tests.test_invert_job import manifest
from tests.test_invert_job import override
from tests.test_invert_job import write_images
from tests.test_training import _tiny_config


def _preempt_after_call(monkeypatch, n):
  """SIGTERM to this process right after the n-th jitted call of run_steps (as a scheduler would)."""
  original, calls = inversion._run_steps_jit, []

  def call_then_sigterm(*args, **kwargs):
    out = original(*args, **kwargs)
    calls.append(1)
    if len(calls) == n:
      os.kill(os.getpid(), signal.SIGTERM)
    return out

  monkeypatch.setattr(inversion, '_run_steps_jit', call_then_sigterm)


@pytest.fixture(scope='module')
def preempted_run(assets, tmp_path_factory):  # noqa: F811
  """A reference run and a run preempted at step 3 of 6 (one batch of 2 images, checkpoint saved)."""
  root = tmp_path_factory.mktemp('preempted')
  d = root / 'in'
  names = write_images(d, 2)
  ref = make_config(assets, d, root / 'ref', batch_size=2, checkpoint_every=0)
  assert job.run(ref)['exit_code'] == 0
  cfg = make_config(assets, d, root / 'out', batch_size=2, checkpoint_every=3)
  with pytest.MonkeyPatch.context() as mp:
    _preempt_after_call(mp, 3)
    assert job.run(cfg)['exit_code'] == exit_codes.PREEMPTED
  assert (root / 'out' / batch_state.CHECKPOINTS / 'p0' / '3').is_dir()
  return dict(ref=ref, cfg=cfg, names=names, root=root)


@pytest.fixture()
def interrupted(preempted_run, tmp_path):
  """A copy of the preempted run's output folder in ``tmp_path / 'out'``, and its config."""
  shutil.copytree(preempted_run['root'] / 'out', tmp_path / 'out', symlinks=True)
  cfg = override(preempted_run['cfg'], output_dir=str(tmp_path / 'out'))
  step_dir = tmp_path / 'out' / batch_state.CHECKPOINTS / 'p0' / '3'
  return dict(preempted_run, cfg=cfg, step_dir=step_dir, root=tmp_path)


def _tamper(meta: dict, how: str, folder) -> dict:
  if how == 'paths added':  # the layout of before (items with a path and a stem), made hostile
    names = meta.get('names') or [it['name'] for it in meta['items']]
    meta['items'] = [{'path': str(folder / n), 'name': n, 'stem': '../../evil'} for n in names]
  elif how == 'name edited':
    meta['names'][0] = '../../evil.png'
  elif how == 'name edited, digest recomputed':
    meta['names'][0] = '../../evil.png'
    meta['digest'] = batch_state._digest(meta)
  elif how == 'huge batch shape, digest recomputed':
    meta['batch_shape'] = 10**9
    meta['digest'] = batch_state._digest(meta)
  return meta


@pytest.mark.parametrize(
  'how',
  ['paths added', 'name edited', 'name edited, digest recomputed', 'huge batch shape, digest recomputed'],
)
def test_tampered_checkpoint_metadata_never_builds_a_path(interrupted, how):
  meta_file = interrupted['step_dir'] / 'meta' / 'metadata'
  images_dir = pathlib.Path(interrupted['cfg'].job.images)
  meta_file.write_text(json.dumps(_tamper(json.loads(meta_file.read_text()), how, images_dir)))
  root = interrupted['root']
  s = job.run(interrupted['cfg'])
  assert (s['exit_code'], s['ok']) == (0, 2)
  assert not list(root.parent.glob('evil*')) and not list(root.rglob('evil*'))
  assert sorted(p.name for p in root.iterdir()) == ['out']  # nothing beside the output folder
  assert_complete(interrupted['cfg'].job.output_dir, interrupted['names'])
  assert_same_results(
    interrupted['ref'].job.output_dir, interrupted['cfg'].job.output_dir, ['img000', 'img001']
  )


def test_corrupt_checkpoint_state_restarts_the_batch(interrupted, caplog):
  for p in (interrupted['step_dir'] / 'state').rglob('*'):
    if p.is_file() and p.parent.name == 'd':  # the array data files
      p.write_bytes(os.urandom(p.stat().st_size))
  s = job.run(interrupted['cfg'])
  assert (s['exit_code'], s['ok'], s['failed']) == (0, 2, 0)
  assert s['this_process']['steps'] == 2 * 6  # restarted from step 0, not resumed, not failed
  assert 'not resumed' in caplog.text and 'restarts from step 0' in caplog.text
  assert_same_results(
    interrupted['ref'].job.output_dir, interrupted['cfg'].job.output_dir, ['img000', 'img001']
  )


def test_overwrite_config_removes_the_old_results_even_after_a_kill(assets, tmp_path, monkeypatch):  # noqa: F811
  d = tmp_path / 'in'
  write_images(d, 3)
  out = tmp_path / 'out'
  cfg = make_config(assets, d, out, method='mganprior', iterations=2)
  assert job.run(cfg)['ok'] == 3
  (d / 'img002.png').unlink()  # no longer an input: its old result must not stay beside the new ones
  new = override(cfg, lr=0.5, overwrite_config=True)
  old_record = (out / 'config.json').read_text()
  remove = output.remove_old_results

  def killed_midway(folder):  # a kill after the first result file is gone
    (folder / 'img000.png').unlink()
    raise KeyboardInterrupt

  monkeypatch.setattr(output, 'remove_old_results', killed_midway)
  with pytest.raises(KeyboardInterrupt):
    job.run(new)
  assert (out / 'config.json').read_text() == old_record  # the old record stays until the clean-up ends
  monkeypatch.setattr(output, 'remove_old_results', remove)
  s = job.run(new)
  assert (s['exit_code'], s['total'], s['ok']) == (0, 2, 2)
  assert sorted(p.name for p in out.iterdir() if not p.name.startswith('.')) == [
    'config.json',
    'img000.npz',
    'img000.png',
    'img001.npz',
    'img001.png',
    'inputs',
    'manifest.jsonl',
    'report.html',
    'summary.json',
  ]
  assert sorted(p.name for p in (out / 'inputs').iterdir()) == ['img000.png', 'img001.png']
  assert [r['name'] for r in manifest(out)] == ['img000.png', 'img001.png']


def test_a_result_missing_on_disk_is_redone(assets, tmp_path):  # noqa: F811
  d = tmp_path / 'in'
  names = write_images(d, 2)
  cfg = make_config(assets, d, tmp_path / 'out', method='mganprior', iterations=2)
  job.run(cfg)
  (tmp_path / 'out' / 'img001.png').unlink()
  s = job.run(cfg)
  assert (s['exit_code'], s['this_process']['ok']) == (0, 1)
  assert_complete(tmp_path / 'out', names)  # each name once in the manifest, both files on disk


@pytest.mark.parametrize(
  'key,value,names',
  [
    ('lr', -1.0, 'config.optim.lr (--lr)'),
    ('lr', 0.0, 'config.optim.lr (--lr)'),
    ('lr', float('nan'), 'config.optim.lr (--lr)'),
    ('lr', float('inf'), 'config.optim.lr (--lr)'),
    ('iterations', 0, 'config.optim.iterations (--iterations)'),
    ('weight_eps', 0.0, 'config.method.weight_eps'),
    ('weight_eps', -1e-3, 'config.method.weight_eps'),
    ('weight_eps', float('nan'), 'config.method.weight_eps'),
  ],
)
def test_meaningless_settings_are_refused_naming_the_key(key, value, names):
  with pytest.raises(config.ConfigError, match=f'^{names.replace("(", "[(]").replace(")", "[)]")} must be'):
    configs.invert('pmsfc', **{key: value})


@pytest.mark.parametrize('mask', ['all hole', 'no hole'])
def test_inpainting_masks_without_a_known_pixel_or_a_hole_are_refused(assets, tmp_path, mask):  # noqa: F811
  d = tmp_path / 'in'
  write_images(d, 1)
  value = 1.0 if mask == 'all hole' else -1.0  # white = hole
  images.save_image(tmp_path / 'mask.png', np.full((16, 16, 3), value, np.float32))
  cfg = make_config(assets, d, tmp_path / 'out', task='inpaint', mask=str(tmp_path / 'mask.png'))
  why = 'has no known pixel' if mask == 'all hole' else 'has no hole'
  with pytest.raises(config.ConfigError, match=f'--mask={tmp_path / "mask.png"}: .* {why}'):
    job.run(cfg)
  assert job.main(cfg) == exit_codes.USAGE and not (tmp_path / 'out').exists()


def test_identical_images_psnr_inf_in_launch_evaluate(tmp_path, capsys):
  ref, cand = tmp_path / 'ref', tmp_path / 'cand'
  rng = np.random.default_rng(0)
  for folder in (ref, cand):
    folder.mkdir()
  for i in range(3):
    images.save_image(ref / f'{i}.png', rng.uniform(-1, 1, (16, 16, 3)))
    shutil.copy(ref / f'{i}.png', cand / f'{i}.png')
  assert evaluate.run(str(ref), str(cand), str(tmp_path / 'a.csv'), ['psnr', 'ssim']) == 0
  rows = list(csv.DictReader(open(tmp_path / 'a.csv')))
  assert [r['psnr'] for r in rows] == ['inf', 'inf', 'inf', 'inf'] and rows[-1]['candidate'] == '3 pairs'
  assert '| **mean (3)** | inf | 1.0000 |' in capsys.readouterr().out
  images.save_image(cand / '2.png', np.clip(images.load_image(cand / '2.png') + 0.1, -1, 1))
  assert evaluate.run(str(ref), str(cand), str(tmp_path / 'b.csv'), ['psnr']) == 0
  rows = list(csv.DictReader(open(tmp_path / 'b.csv')))
  finite = float(rows[2]['psnr'])
  assert np.isfinite(finite) and float(rows[-1]['psnr']) == pytest.approx(finite, abs=1e-4)
  assert rows[-1]['status'] == 'psnr: 2 infinite value(s) not in the mean'
  assert f'| **mean (3)** | {finite:.4f} (+2 inf) |' in capsys.readouterr().out
  for p in cand.iterdir():
    p.unlink()
  assert evaluate.run(str(ref), str(cand), str(tmp_path / 'c.csv'), ['psnr']) == 1  # nothing evaluated


def test_identical_images_psnr_inf_in_the_job_summary(tmp_path):
  assert evaluate.to_json(np.float32(np.inf)) == 'inf' and evaluate.to_json(np.nan) is None
  items = []
  for name, psnr in (('a.png', 'inf'), ('b.png', 30.0), ('c.png', 'inf')):
    items.append(type('Item', (), {'name': name})())
    line = {'name': name, 'stem': name[:-4], 'status': 'ok', 'psnr': psnr, 'ssim': 1.0, 'seconds': 1.0}
    with open(tmp_path / 'manifest.jsonl', 'a') as f:
      f.write(json.dumps(line) + '\n')
  s = summary_lib.write_summary(tmp_path, items, 1.0)
  assert (s['mean_psnr'], s['psnr_infinite']) == (30.0, 2)
  assert 'mean PSNR 30.00 (+2 inf) dB' in summary_lib.format_summary(tmp_path, s)
  (tmp_path / 'manifest.jsonl').write_text(json.dumps(dict(line, name='x.png', psnr='inf')) + '\n')
  s = summary_lib.write_summary(tmp_path, items[:1], 1.0)
  assert (s['mean_psnr'], s['psnr_infinite']) == ('inf', 1)  # identical folders: inf, not an empty mean
  assert json.loads((tmp_path / 'summary.json').read_text())['mean_psnr'] == 'inf'  # strict JSON
  assert 'mean PSNR inf dB' in summary_lib.format_summary(tmp_path, s)


def test_call_sizer_bounds_calls_by_time():
  s = loops.CallSizer(0, max_seconds=1.0, backend='gpu')
  assert s.measuring and s.steps(100) == 1
  s.observe(1, 30.0)  # compilation: ignored
  s.observe(1, 0.1)  # 0.1 s per step -> 8 steps per call (power of two <= 10)
  assert s.measuring and s.steps(100) == 8 and s.steps(7) == 4 and s.steps(3) == 2
  s.observe(8, 30.0)  # compilation of the 8-step call: ignored
  s.observe(8, 2.0)  # a scan step is slower than a lone one: halve
  assert s.measuring and s.steps(100) == 4
  s.observe(4, 30.0)
  s.observe(4, 0.9)
  assert not s.measuring and s.steps(100) == 4
  assert loops.CallSizer(0, 1.0, backend='cpu').steps(100) == 1  # CPU: one step per call
  assert loops.CallSizer(3, 1.0, backend='gpu').steps(100) == 3  # explicit: as given
  assert loops.CallSizer(0, 0.0, backend='gpu').steps(100) == 100  # no bound: the whole chunk


def test_in_flight_keeps_the_host_one_call_ahead(monkeypatch):
  blocked = []
  monkeypatch.setattr(jax, 'block_until_ready', lambda x: blocked.append(int(x[0])) or x)
  f = loops.InFlight()
  for k in range(4):
    f.add(jax.numpy.full((2,), k))  # the marks of calls 0..3
  assert blocked == [0, 1, 2]  # every call but the last waited for: one call queued behind the running one


def test_run_steps_auto_sized_calls_are_powers_of_two_and_equal_results(small, monkeypatch):  # noqa: F811
  gen, masks, targets = small
  # 8 steps, as test_inversion's chunk test: over tens of Adam steps a lax.scan body's last-bit
  # differences from a lone step grow chaotically (40 steps in 8-step scans: 1e-2 on jax 0.10 and 0.12).
  cfg = configs.invert('pmsfc,reconstruct,local', perceptual_weight=0.0, num_codes=3, lr=0.05, iterations=8)
  key = jax.random.key(5)
  ref = inversion.run_steps(
    gen, None, inversion.init_state(gen, None, targets, masks, cfg, key), targets, masks, cfg, 8
  )
  original, lengths = inversion._run_steps_jit, []

  def recorded(*args, num_steps, **kwargs):
    lengths.append(num_steps)
    return original(*args, num_steps=num_steps, **kwargs)

  monkeypatch.setattr(inversion, '_run_steps_jit', recorded)
  sizer = loops.CallSizer(0, max_seconds=1.0, backend='tpu')  # as on an accelerator (steps take ms here)
  state = inversion.init_state(gen, None, targets, masks, cfg, key)
  state = inversion.run_steps(gen, None, state, targets, masks, cfg, 8, sizer=sizer)
  # Two calibration calls of one step, then lax.scan calls of power-of-two lengths (a bounded set).
  assert sum(lengths) == 8 and lengths[:2] == [1, 1] and max(lengths) > 1, lengths
  assert all(n & (n - 1) == 0 for n in lengths), lengths
  chex.assert_trees_all_close(state, ref, atol=2e-5, rtol=1e-5)


def test_train_pggan_sigterm_saves_the_step_and_exits_143(photo_folder, tmp_path, monkeypatch):
  full = train_pggan.train(_tiny_config(photo_folder, 4), str(tmp_path / 'full'))
  make, steps = gan.make_train_fn, []

  def make_then_sigterm(*args):
    fn = make(*args)

    def run(state, data, **kwargs):
      out = fn(state, data, **kwargs)
      steps.append(1)
      if len(steps) == 1:  # mid call-window (steps_per_call=2): acted on after this step
        os.kill(os.getpid(), signal.SIGTERM)
      return out

    return run

  monkeypatch.setattr(gan, 'make_train_fn', make_then_sigterm)
  with pytest.raises(SystemExit) as e:
    train_pggan.train(_tiny_config(photo_folder, 4), str(tmp_path / 'split'))
  assert e.value.code == exit_codes.PREEMPTED and len(steps) == 1
  assert sorted(p.name for p in (tmp_path / 'split' / 'checkpoints').iterdir() if p.name.isdigit()) == ['1']
  monkeypatch.setattr(gan, 'make_train_fn', make)
  resumed = train_pggan.train(_tiny_config(photo_folder, 4), str(tmp_path / 'split'))
  chex.assert_trees_all_equal(full, resumed)
  rows = [json.loads(x) for x in (tmp_path / 'split' / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == [2, 4]


def test_exit_statuses_are_distinct_and_evaluate_agrees():
  codes = [exit_codes.OK, exit_codes.SOME_FAILED, exit_codes.USAGE, exit_codes.LOCKED, exit_codes.PREEMPTED]
  assert len(set(codes)) == 5
  assert evaluate.NOTHING_EVALUATED == exit_codes.SOME_FAILED  # evaluation/ cannot import jobs/
