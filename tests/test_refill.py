"""Issue 19: early stop per image (core/early_stop.py) and the batch job's continuous refill
(jobs/invert/refill.py): slots, exact results, preemption, kill -9."""

import collections
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmsfc_jax.core import config
from pmsfc_jax.core import early_stop
from pmsfc_jax.core import inversion
from pmsfc_jax.io import images
from pmsfc_jax.io import listing
from pmsfc_jax.jobs import exit_codes
from pmsfc_jax.jobs.invert import batch_state
from pmsfc_jax.jobs.invert import fingerprint
from pmsfc_jax.jobs.invert import job
from pmsfc_jax.jobs.invert import refill
from tests import configs
from tests.test_invert_job import REPO
from tests.test_invert_job import assert_complete
from tests.test_invert_job import assert_same_results
from tests.test_invert_job import assets  # noqa: F401
from tests.test_invert_job import cli_args
from tests.test_invert_job import load_result
from tests.test_invert_job import make_config
from tests.test_invert_job import manifest
from tests.test_invert_job import write_images

# 5 images through 2 slots (one device: no padding of the batch to the device count); the tolerance and
# window make them stop at different steps (measured: 18-24) below the cap of 40.
STOP = {'job.stop_tolerance': 0.05, 'job.stop_window': 3, 'job.num_devices': 1}


def _reference_converged(history: np.ndarray, step: int, window: int, tol: float) -> bool:
  """The criterion written with NumPy loops (independent of early_stop.converged)."""
  if step <= window:
    return False
  then = min(history[: step - window])
  now = min(history[:step])
  return then - now <= tol * abs(then)


def test_criterion_equals_its_definition():
  rng = np.random.default_rng(0)
  # Bumpy decreasing curves (the per-step loss at Adam lr 0.03) and a flat one.
  curves = [np.exp(-np.arange(60) / 15) + 0.3 + 0.05 * rng.random(60), np.full(60, 2.0)]
  for hist in curves:
    for step in range(0, 61):
      for window, tol in ((5, 0.01), (10, 0.05), (1, 0.0)):
        got = bool(early_stop.converged(jnp.asarray(hist, jnp.float32), jnp.int32(step), window, tol))
        assert got == _reference_converged(hist.astype(np.float32), step, window, tol), (step, window, tol)


def test_settings_are_checked_and_fingerprinted(assets):  # noqa: F811
  with pytest.raises(config.ConfigError, match=r'config.job.stop_tolerance must be in \[0, 1\)'):
    configs.invert('pmsfc', **{'job.stop_tolerance': -0.1})
  base = configs.invert('pmsfc', generator=assets['generator'])
  off = fingerprint.payload(base, assets['gen'], None, None)
  assert 'early_stop' not in off  # folders of before keep their fingerprint
  on = fingerprint.payload(config.override(base, {'job.stop_tolerance': 0.01}), assets['gen'], None, None)
  assert on['early_stop'] == {'tolerance': 0.01, 'window': 100} and fingerprint.digest(
    on
  ) != fingerprint.digest(off)


class _CompileLog(logging.Handler):
  """Collects the names of the functions XLA compiles (``jax.log_compiles``' lines)."""

  def __init__(self, names: list):
    super().__init__(logging.DEBUG)
    self.names = names

  def emit(self, record):
    if m := re.match(r'Finished XLA compilation of jit\((\w+)\)', record.getMessage()):
      self.names.append(m.group(1))


@pytest.fixture(scope='module')
def reference(assets, tmp_path_factory):  # noqa: F811
  """5 images through 2 slots with early stop, uninterrupted: the run the other tests compare with."""
  root = tmp_path_factory.mktemp('refill')
  names = write_images(root / 'in', 5)
  cfg = make_config(assets, root / 'in', root / 'ref', batch_size=2, iterations=40, **STOP)
  calls, lengths, compiled = [], set(), []
  merge, steps = refill._merge, refill._Device.steps
  refill._merge = lambda *a: calls.append(1) or merge(*a)
  refill._Device.steps = lambda self, state, n: lengths.add(n) or steps(self, state, n)
  handler = _CompileLog(compiled)
  logging.getLogger('jax._src.dispatch').addHandler(handler)
  try:
    with jax.log_compiles(True):
      summary = job.run(cfg)
  finally:
    refill._merge, refill._Device.steps = merge, steps
    logging.getLogger('jax._src.dispatch').removeHandler(handler)
  return {
    'folder': root / 'in',
    'names': names,
    'cfg': cfg,
    'summary': summary,
    'merges': len(calls),
    'compiled': collections.Counter(compiled),  # XLA compilations by function name
    'lengths': lengths,
  }


def _solo_runs(assets, folder, names, tmp_path, **overrides):  # noqa: F811
  """Each image alone (one slot), in its own folder under the same name (hence the same key)."""
  out = {}
  for name in names:
    d = tmp_path / f'solo_in_{name}'
    d.mkdir()
    shutil.copy(folder / name, d / name)
    cfg = make_config(assets, d, tmp_path / f'solo_{name}', batch_size=1, iterations=40, **STOP, **overrides)
    assert job.run(cfg)['exit_code'] == 0
    out[name] = cfg.job.output_dir
  return out


def test_refill_gives_every_image_its_solo_result(assets, reference, tmp_path):  # noqa: F811
  cfg, names = reference['cfg'], reference['names']
  assert reference['summary']['exit_code'] == 0 and reference['summary']['ok'] == 5
  assert_complete(cfg.job.output_dir, names)  # each image once, no checkpoint left
  steps = {r['name']: r['steps'] for r in manifest(cfg.job.output_dir)}
  assert len(set(steps.values())) >= 3 and max(steps.values()) < 40, steps  # different stops, all early
  assert reference['merges'] >= 3  # slots really were refilled (the first fill and at least two refills)
  # One program: refills are host-side row updates. XLA compiled the merge and the finished flags once,
  # and the steps once per call length (the call sizer's), however many images passed through (at most:
  # an earlier test in this process may have compiled the same program already).
  compiled = reference['compiled']
  assert compiled['_merge'] <= 1 and compiled['_finished'] <= 1, compiled
  assert compiled['run_steps_impl'] <= len(reference['lengths']), (compiled, reference['lengths'])
  solo = _solo_runs(assets, reference['folder'], names, tmp_path)
  for name in names:
    stem = name[:-4]
    a, _ = load_result(cfg.job.output_dir, stem)
    b, _ = load_result(solo[name], stem)
    assert int(a['step']) == int(b['step']) == steps[name]
    n = steps[name]
    np.testing.assert_allclose(a['loss_history'][:n], b['loss_history'][:n], rtol=1e-5, atol=1e-6)
    assert np.isnan(a['loss_history'][n:]).all() and np.isnan(b['loss_history'][n:]).all()
    np.testing.assert_allclose(a['codes'], b['codes'], atol=2e-5, rtol=1e-4)


def test_criterion_off_is_the_plain_job(assets, tmp_path, monkeypatch):  # noqa: F811
  d = tmp_path / 'in'
  names = write_images(d, 3)
  monkeypatch.setattr(refill, 'run', lambda *a: pytest.fail('the refill loop ran with the criterion off'))
  cfg = make_config(assets, d, tmp_path / 'out', batch_size=2, iterations=6)
  assert job.run(cfg)['exit_code'] == 0
  assert {r['steps'] for r in manifest(cfg.job.output_dir)} == {6}
  # The library's inversion of the same images and keys (the step without any per-row freeze).
  targets = np.stack([images.load_image(str(d / n), 16) for n in names])
  masks = np.load(pathlib.Path(assets['subspaces']) / 'masks.npy')
  res = inversion.invert(assets['gen'], None, targets, masks, cfg, listing.image_keys(cfg.seed, names))
  for i, name in enumerate(names):
    a, _ = load_result(cfg.job.output_dir, name[:-4])
    np.testing.assert_allclose(a['codes'], res.codes[i], atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(a['loss_history'], res.loss_history[i], atol=2e-5, rtol=1e-4)


def test_refill_sigterm_then_resume_equals_uninterrupted(assets, reference, tmp_path, monkeypatch):  # noqa: F811
  ref, names = reference['cfg'], reference['names']
  cfg = make_config(
    assets, reference['folder'], tmp_path / 'out', batch_size=2, iterations=40, checkpoint_every=7, **STOP
  )
  original, calls = inversion.run_steps_jit, []

  def call_then_sigterm(*args, **kwargs):
    out = original(*args, **kwargs)
    calls.append(1)
    if len(calls) == 30:  # mid-run: some images recorded, two in their slots at different steps
      os.kill(os.getpid(), signal.SIGTERM)
    return out

  monkeypatch.setattr(inversion, 'run_steps_jit', call_then_sigterm)
  s = job.run(cfg)
  assert s['exit_code'] == exit_codes.PREEMPTED and 0 < s['ok'] < 5, s
  ck = pathlib.Path(cfg.job.output_dir) / batch_state.CHECKPOINTS / 'p0'
  assert [p.name for p in ck.iterdir() if p.name.isdigit()] == ['30']  # saved at the notice
  monkeypatch.setattr(inversion, 'run_steps_jit', original)
  assert job.run(cfg)['exit_code'] == 0
  assert_complete(cfg.job.output_dir, names)
  assert_same_results(ref.job.output_dir, cfg.job.output_dir, [n[:-4] for n in names])
  assert {r['name']: r['steps'] for r in manifest(ref.job.output_dir)} == {
    r['name']: r['steps'] for r in manifest(cfg.job.output_dir)
  }


def _run_cli(args, tmp_path, fault=None):
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'jax_cache'))
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  env.pop('PMSFC_FAULT', None)
  if fault:
    env['PMSFC_FAULT'] = fault
    args = [args[0], '-m', 'tests.fault_runner', *args[2:]]
  return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_refill_survives_kill9_with_an_exact_resume(assets, reference, tmp_path):  # noqa: F811
  ref, names = reference['cfg'], reference['names']
  cfg = make_config(
    assets, reference['folder'], tmp_path / 'out', batch_size=2, iterations=40, checkpoint_every=7, **STOP
  )
  args = cli_args(cfg) + [f'--config.{k}={v}' for k, v in STOP.items()]
  p = _run_cli(args, tmp_path, 'call:25')  # between the checkpoints after 21 and 28 steps, images recorded
  assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
  p = _run_cli(args, tmp_path)
  assert p.returncode == 0, p.stderr[-3000:]
  assert_complete(cfg.job.output_dir, names)
  assert_same_results(ref.job.output_dir, cfg.job.output_dir, [n[:-4] for n in names])
