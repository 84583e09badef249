"""Issue #11 end to end (``python -m launch.invert`` on the shipped ``demo`` model, tiny iteration counts):
special files among the inputs, preemption within seconds on the per-step and the scan path (resume
equal to an uninterrupted run), one writer per output folder, and the exit status of each class.

Faults at a point come from the test-owned ``tests/fault_runner.py`` (``PMSFC_FAULT``).
"""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pmsfc_jax.core import config
from pmsfc_jax.jobs import exit_codes
from tests.test_invert_job import REPO
from tests.test_invert_job import assert_complete
from tests.test_invert_job import load_result
from tests.test_invert_job import manifest
from tests.test_invert_job import write_images

# Runs launch.invert and prints the child's own peak RSS (KiB) on stderr, however the job exits. VmHWM of
# /proc/self/status, not getrusage's ru_maxrss: that one survives exec and would report the forking pytest.
RSS_RUNNER = (
  'import runpy, sys\n'
  "sys.argv = ['launch.invert'] + sys.argv[1:]\n"
  'try:\n'
  "  runpy.run_module('launch.invert', run_name='__main__', alter_sys=True)\n"
  'finally:\n'
  "  hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
  "  print(f'maxrss_kib={hwm}', file=sys.stderr)\n"
)


def demo_args(images_spec, out, *extra, iterations=12, batch_size=4):
  """launch.invert on the shipped demo model, tiny: no VGG term, checkpoint_every=500 (the default)."""
  return [
    '--generator=demo',
    '--subspaces=demo',
    f'--images={images_spec}',
    f'--output_dir={out}',
    '--preset=local',
    f'--iterations={iterations}',
    f'--batch_size={batch_size}',
    '--checkpoint_every=500',
    '--config.loss.perceptual_weight=0',
    '--config.job.num_workers=2',  # progress every 30 s (the default): the host is not synced per call
    *extra,
  ]


def run_cli(args, cache_dir, fault=None, module='launch.invert', timeout=300, log=None):
  """``python -m module args`` (through tests/fault_runner.py with ``fault``), compile cache shared;
  with ``log`` (a path prefix) it returns the running Popen, its output going to ``log.out`` / ``.err``."""
  env = dict(os.environ)
  env.pop('PMSFC_FAULT', None)
  env.setdefault('JAX_COMPILATION_CACHE_DIR', str(cache_dir))
  env.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  env.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')
  cmd = [sys.executable, *(['-m', module] if module else []), *args]
  if fault:
    env['PMSFC_FAULT'] = fault
    cmd = [sys.executable, '-m', 'tests.fault_runner', module, *args]
  if log is not None:
    out, err = open(f'{log}.out', 'w'), open(f'{log}.err', 'w')  # noqa: SIM115 (closed by the test)
    return subprocess.Popen(cmd, cwd=REPO, env=env, text=True, stdout=out, stderr=err)
  return subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True, timeout=timeout)


def _signal_time(stderr: str, point: str) -> float:
  return float(re.search(rf"fault_runner: sending SIGTERM at '{point}' t=([\d.]+)", stderr).group(1))


def _steps_saved(out) -> list[str]:
  ck = out / '.checkpoints' / 'p0'
  return sorted(p.name for p in ck.iterdir() if p.name.isdigit())


@pytest.fixture(scope='module')
def hostile(tmp_path_factory):
  """One uninterrupted run over 3 images + a FIFO, a /dev/zero link, a sparse 1 GiB file and a folder
  named like an image: the special-file test and the reference of the preemption tests."""
  root = tmp_path_factory.mktemp('hostile')
  d = root / 'in'
  good = write_images(d, 3, size=(32, 32))
  os.mkfifo(d / 'fifo.png')
  (d / 'zero.png').symlink_to('/dev/zero')
  with open(d / 'big.png', 'wb') as f:
    f.truncate(2**30)  # sparse: reading it whole would cost 1 GiB
  (d / 'folder.png').mkdir()  # a directory walk searches it (empty): logged, not an input
  out = root / 'ref'
  p = run_cli(['-c', RSS_RUNNER, *demo_args(d, out)], root / 'cache', module=None)
  return dict(root=root, images=d, good=good, out=out, proc=p, cache=root / 'cache')


def test_special_and_huge_files_are_refused_unread_and_the_job_ends(hostile):
  p, d = hostile['proc'], hostile['images']
  assert p.returncode == exit_codes.SOME_FAILED, p.stderr[-3000:]
  recs = {r['name']: r for r in manifest(hostile['out'])}
  assert set(recs) == {*hostile['good'], 'fifo.png', 'zero.png', 'big.png'}
  assert all(recs[n]['status'] == 'ok' for n in hostile['good'])
  assert recs['fifo.png']['error'] == f'{d}/fifo.png: not a regular file (a FIFO): not opened'
  assert recs['zero.png']['error'] == f'{d}/zero.png: not a regular file (a character device): not opened'
  assert recs['big.png']['error'] == (
    f'{d}/big.png: {2**30} bytes exceeds the input size limit of {config.Job.max_input_bytes} bytes '
    '(config.job.max_input_bytes)'
  )
  assert 'folder.png is a folder, not an image' in p.stderr
  assert 'total 6: ok 3, failed 3, pending 0' in p.stdout
  # Memory stays bounded: nothing of the 1 GiB file (nor of /dev/zero) was read.
  rss = int(p.stderr.rsplit('maxrss_kib=', 1)[1].split()[0])
  assert rss < 1_000_000, rss  # KiB; the job itself peaks near 0.6 GB here


@pytest.mark.parametrize(
  'path,fault,saved',
  [
    # Per-step path (CPU auto: one step per jitted call), chunk 12 steps, checkpoint_every=500: the notice
    # after call 5 is acted on after that call; the resume is bit-identical to the uninterrupted run.
    ('per-step', 'call:5:SIGTERM', '5'),
    # Scan path (4 steps per lax.scan call): acted on after the second call, at step 8.
    ('scan', 'call:2:SIGTERM', '8'),
  ],
)
def test_sigterm_is_honoured_within_seconds_and_the_rerun_finishes(hostile, path, fault, saved):
  out = hostile['root'] / f'sigterm-{path}'
  extra = ['--config.job.steps_per_call=4'] if path == 'scan' else []
  args = demo_args(hostile['images'], out, *extra)
  p = run_cli(args, hostile['cache'], fault=fault)
  t_exit = time.time()
  assert p.returncode == exit_codes.PREEMPTED, p.stderr[-3000:]
  assert t_exit - _signal_time(p.stderr, 'call') < 30
  assert _steps_saved(out) == [saved]  # the batch state of the notice's step, not the chunk's end
  assert 'PREEMPTED: rerun to resume' in p.stdout
  p = run_cli(args, hostile['cache'])
  assert p.returncode == exit_codes.SOME_FAILED, p.stderr[-3000:]  # the three special files
  assert 'total 6: ok 3, failed 3, pending 0' in p.stdout
  ref = hostile['out']
  if path == 'scan':  # the uninterrupted run on the same path (a scan body and a lone step differ in floats)
    ref = hostile['root'] / 'scan-ref'
    assert run_cli(demo_args(hostile['images'], ref, *extra), hostile['cache']).returncode == 1
  for stem in [n[:-4] for n in hostile['good']]:
    a, png_a = load_result(ref, stem)
    b, png_b = load_result(out, stem)
    for k in ('codes', 'weights', 'loss_history', 'step', 'key'):
      np.testing.assert_array_equal(a[k], b[k], err_msg=f'{stem}: {k}')
    np.testing.assert_array_equal(png_a, png_b)


def test_a_second_job_on_the_same_folder_refuses_and_the_first_finishes(tmp_path):
  d = tmp_path / 'in'
  names = write_images(d, 12, size=(32, 32))
  out = tmp_path / 'out'
  args = demo_args(d, out, iterations=4)
  first = run_cli(args, tmp_path / 'cache', fault='call:1:SIGSTOP', log=tmp_path / 'first')
  try:
    deadline = time.time() + 240
    while open(f'/proc/{first.pid}/stat').read().split(') ')[1][0] != 'T':  # stopped mid-batch
      assert first.poll() is None and time.time() < deadline, (tmp_path / 'first.err').read_text()[-3000:]
      time.sleep(0.2)
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in out.rglob('*')}
    second = run_cli(args, tmp_path / 'cache')
    assert second.returncode == exit_codes.LOCKED, second.stderr[-3000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and f'{out} is in use by another running job (pid {first.pid}' in errors[0]
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in out.rglob('*')} == before  # untouched
    os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=300) == exit_codes.OK, (tmp_path / 'first.err').read_text()[-3000:]
  finally:
    if first.poll() is None:
      first.kill()
      first.wait()
  assert 'total 12: ok 12, failed 0, pending 0' in (tmp_path / 'first.out').read_text()
  assert_complete(out, names)


@pytest.mark.parametrize('case', ['flag value', 'output folder = inputs', 'generate --latents=x.npz'])
def test_usage_and_path_errors_are_one_line_and_exit_2(tmp_path, case):
  d = tmp_path / 'in'
  write_images(d, 1)
  module = 'launch.invert'
  if case == 'flag value':
    args, expect = (
      demo_args(d, tmp_path / 'out', '--lr=nan'),
      'config.optim.lr (--lr) must be a finite number > 0',
    )
  elif case == 'output folder = inputs':
    args, expect = demo_args(d, d), 'is the input folder'
  else:
    np.savez(tmp_path / 'z.npz', z=np.zeros((2, 512), np.float32))
    module, expect = 'launch.generate', 'an .npz archive, not a plain .npy array'
    args = ['--generator=demo', f'--latents={tmp_path / "z.npz"}', f'--output_dir={tmp_path / "out"}']
  before = sorted(tmp_path.rglob('*'))
  p = run_cli(args, tmp_path / 'cache', module=module, timeout=120)
  assert p.returncode == exit_codes.USAGE, p.stderr[-3000:]
  assert 'Traceback' not in p.stderr
  lines = [line for line in p.stderr.splitlines() if line.startswith(('error:', 'FATAL'))]
  assert len(lines) == 1 and expect in lines[0], p.stderr[-3000:]
  assert sorted(p for p in tmp_path.rglob('*') if 'cache' not in p.parts) == [
    p for p in before if 'cache' not in p.parts
  ]
