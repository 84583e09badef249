"""Mesh / sharding helpers, the processes' agreement, and pods of 2 `jax.distributed` processes of the job.

A pod here: 2 local processes with 2 forced CPU devices each, gloo collectives, a coordinator on
127.0.0.1 (a free port), the tiny 16x16 generator of tests/test_invert_job.py and a handful of images. Each
pod is a few tens of seconds on a loaded 2-core machine (imports and compilation, twice), so scenarios
share runs: one clean run on the global mesh, one chain of reruns on the same folder (SIGTERM to one
process, then kill -9 of one process, then the finishing run, on host meshes), and one of early stop with
refill on the global mesh (SIGTERM to one process, then the finishing run). Every wait is bounded and every
child is killed in a ``finally``.
"""

import dataclasses
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import time

import jax
import numpy as np
import pytest

from pmsfc_jax.core import config as config_lib
from pmsfc_jax.core import loops
from pmsfc_jax.core import mesh
from pmsfc_jax.io import locks
from pmsfc_jax.jobs import multihost
from pmsfc_jax.jobs.invert import batch_state
from pmsfc_jax.jobs.invert import job
from pmsfc_jax.jobs.invert import output
from pmsfc_jax.jobs.invert import validate
from tests.test_invert_job import REPO  # noqa: F401
from tests.test_invert_job import assert_same_results  # noqa: F401
from tests.test_invert_job import assets  # noqa: F401
from tests.test_invert_job import cli_args  # noqa: F401
from tests.test_invert_job import load_result  # noqa: F401
from tests.test_invert_job import make_config  # noqa: F401
from tests.test_invert_job import manifest  # noqa: F401
from tests.test_invert_job import write_images  # noqa: F401

POD_TIMEOUT_S = 420  # one pod run, generous: a loaded machine compiles everything twice
HEARTBEAT_S = 5  # the kill -9 test's --config.job.heartbeat_timeout_s
ITERS = 30  # steps of the preemption chain: calls enough for a notice to be agreed inside the first batch


@pytest.mark.parametrize('n,count', [(10, 3), (2, 4), (0, 2), (7, 1)])
def test_process_share_is_disjoint_and_complete(n, count):
  items = [f'img{i}' for i in range(n)]
  shares = [multihost.process_share(items, i, count) for i in range(count)]
  flat = [x for s in shares for x in s]
  assert sorted(flat) == sorted(items) and len(flat) == len(set(flat))
  assert max(map(len, shares)) - min(map(len, shares)) <= 1
  assert shares == [multihost.process_share(items, i, count) for i in range(count)]  # deterministic
  with pytest.raises(ValueError, match=r'process_index=3 is not in \[0, 3\)'):
    multihost.process_share(items, 3, 3)


def test_padding_and_sharding_over_the_mesh():
  assert [mesh.padded_size(b, 4) for b in (1, 4, 5, 8)] == [4, 4, 8, 8]
  x = np.arange(3 * 2, dtype=np.float32).reshape(3, 2)
  p = mesh.pad_batch(x, 8)
  assert p.shape == (8, 2)
  np.testing.assert_array_equal(p[:3], x)
  np.testing.assert_array_equal(p[3:], np.repeat(x[:1], 5, 0))
  with pytest.raises(ValueError, match='batch of 3 is larger than the padded size 2'):
    mesh.pad_batch(x, 2)
  m = mesh.make_mesh()
  assert m.shape == {'data': jax.local_device_count()} == {'data': 4} and mesh.process_count(m) == 1
  s = mesh.shard_batch(p, m)
  assert len(s.addressable_shards) == 4 and s.addressable_shards[0].data.shape == (2, 2)
  r = mesh.replicate({'w': np.ones(3)}, m)
  assert r['w'].sharding.is_fully_replicated
  with pytest.raises(ValueError, match=r'cannot be split over 4 devices; pad the batch to a multiple of 4'):
    mesh.shard_batch(x, m)
  assert mesh.make_mesh(1).shape == {'data': 1}
  with pytest.raises(ValueError, match='num_devices=9 but this process has only 4 devices'):
    mesh.make_mesh(9)


class _Device:
  def __init__(self, process_index, i):
    self.process_index, self.id = process_index, i

  def __repr__(self):
    return f'd{self.process_index}.{self.id}'


def test_job_mesh_scopes(monkeypatch):
  """'host': one process's devices; 'global': every process's (num_devices: the first N of each)."""
  devs = [_Device(p, i) for p in (0, 1) for i in range(3)]
  made = []
  monkeypatch.setattr(mesh, 'make_mesh', lambda n=None, devices=None: made.append((n, devices)) or 'm')
  mesh.job_mesh('host', devices=devs)
  mesh.job_mesh('global', devices=devs)
  mesh.job_mesh('global', 2, devices=devs)
  assert made == [(None, devs[:3]), (None, devs), (None, [devs[0], devs[1], devs[3], devs[4]])]
  assert mesh.job_mesh('host', 2, devices=devs) == 'm' and made[-1] == (2, devs[:3])
  with pytest.raises(ValueError, match='num_devices=4 but process 0 has only 3 devices'):
    mesh.job_mesh('global', 4, devices=devs)
  with pytest.raises(ValueError, match=r"mesh scope must be one of \('global', 'host'\), got 'pod'"):
    mesh.job_mesh('pod')


def test_initialize_rejects_incomplete_arguments(monkeypatch):
  for var in (multihost.ENV_COORDINATOR, multihost.ENV_NUM_PROCESSES, multihost.ENV_PROCESS_ID):
    monkeypatch.delenv(var, raising=False)
  with pytest.raises(
    ValueError,
    match=r"coordinator_address='127.0.0.1:1' also needs \['num_processes', "
    r"'process_id'\]",
  ):
    multihost.initialize('127.0.0.1:1')
  monkeypatch.setenv(multihost.ENV_NUM_PROCESSES, '2')
  monkeypatch.setenv(multihost.ENV_PROCESS_ID, '2')
  with pytest.raises(ValueError, match=r'process_id=2 is not in \[0, num_processes=2\)'):
    multihost.initialize('127.0.0.1:1')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@dataclasses.dataclass
class Ended:
  returncode: int
  stdout: str
  stderr: str
  at: float  # time.time() when its exit was seen


def run_pod(args, tmp, envs=({}, {}), label='pod', timeout=POD_TIMEOUT_S) -> list[Ended]:
  """Runs ``args[i]`` (a launch.invert command line) as process i of a 2-process pod (its output in
  ``tmp/<label>.p<i>.out|err``); waits (bounded) for both, recording when each exit was seen; kills what is
  left in any case."""
  port, procs, logs = _free_port(), [], []
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
  try:
    for i in range(2):
      logs.append((open(tmp / f'{label}.p{i}.out', 'w+'), open(tmp / f'{label}.p{i}.err', 'w+')))
      dist = [
        '--distributed',
        f'--coordinator_address=127.0.0.1:{port}',
        '--num_processes=2',
        f'--process_id={i}',
      ]
      procs.append(
        subprocess.Popen(
          args[i] + dist, cwd=REPO, env={**env, **envs[i]}, stdout=logs[i][0], stderr=logs[i][1], text=True
        )
      )
    ends, deadline = [None, None], time.monotonic() + timeout
    while None in ends and time.monotonic() < deadline:
      for i, p in enumerate(procs):
        if ends[i] is None and p.poll() is not None:
          ends[i] = time.time()
      time.sleep(0.05)
    assert None not in ends, f'the pod did not end within {timeout} s'
    out = []
    for (o, e), p, at in zip(logs, procs, ends):
      o.seek(0), e.seek(0)
      out.append(Ended(p.returncode, o.read(), e.read(), at))
    return out
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait(timeout=60)
    for o, e in logs:
      o.close(), e.close()


def _check(runs, codes):
  for i, (r, code) in enumerate(zip(runs, codes)):
    assert r.returncode == code, f'process {i}: exit {r.returncode}, expected {code}\n{r.stderr[-4000:]}'


@pytest.fixture(scope='module')
def seven(assets, tmp_path_factory):  # noqa: F811
  """7 images (an uneven share: 4 + 3 over 2 processes) and the single-process run of them."""
  root = tmp_path_factory.mktemp('seven')
  names = write_images(root / 'in', 7)
  ref = make_config(assets, root / 'in', root / 'ref', method='mganprior', batch_size=4)
  job.run(ref)
  return root, names, ref


def test_two_processes_share_the_work_and_merge_the_summary(assets, seven, tmp_path):  # noqa: F811
  """The multi-host default (one global mesh) on an uneven share; host meshes: the chain below."""
  root, names, ref = seven
  config = make_config(assets, root / 'in', tmp_path / 'out', method='mganprior', batch_size=2)
  args = cli_args(config)
  runs = run_pod([args, args], tmp_path)
  _check(runs, [0, 0])
  out = pathlib.Path(config.job.output_dir)
  shares = [
    [json.loads(x)['name'] for x in (out / f'manifest.p{i}.jsonl').read_text().splitlines()] for i in range(2)
  ]
  assert not set(shares[0]) & set(shares[1])
  assert sorted(shares[0] + shares[1]) == sorted(names)
  assert shares[0] == names[0::2] and shares[1] == names[1::2]
  merged = manifest(out)
  assert [r['name'] for r in merged] == sorted(names)
  assert {r['process'] for r in merged} == {0, 1}
  summary = json.loads((out / 'summary.json').read_text())
  assert (summary['total'], summary['ok'], summary['failed'], summary['pending']) == (7, 7, 0, 0)
  assert summary['num_processes'] == 2 and summary['num_devices_per_process'] == 2
  assert summary['mesh'] == 'global'
  assert all('global mesh of 4 device(s), batch shape 4' in r.stderr for r in runs)
  assert all('total 7: ok 7, failed 0, pending 0' in r.stdout for r in runs)
  assert not list((out / batch_state.CHECKPOINTS).iterdir())
  # Same per-image results (codes, weights, loss curves) as one process with 4 devices and another batch.
  assert_same_results(ref.job.output_dir, config.job.output_dir, [n[:-4] for n in names])


def _saved_step(stderr):
  steps = re.findall(r'preempted: batch state saved at step (\d+)/', stderr)
  assert len(steps) == 1, stderr[-4000:]
  return int(steps[0])


def test_pod_preempted_then_killed_then_finished(assets, tmp_path):  # noqa: F811
  """9 images over 4 devices (process 1 has a batch fewer, and a truncated image: padded rows), 30 steps:
  SIGTERM to process 1 only -> both exit 143 after the same call; the rerun (resuming the global
  checkpoint) loses process 1 to kill -9 -> process 0 ends within the heartbeat bound; the last rerun, on
  host meshes (the global checkpoint is not mixed in: its batch restarts), finishes: every image once,
  the bad one an error, the rest equal to one uninterrupted process."""
  d = tmp_path / 'in'
  names = write_images(d, 9)
  (d / names[3]).write_bytes((d / names[3]).read_bytes()[:60])  # in process 1's first batch
  ref = make_config(assets, d, tmp_path / 'ref', batch_size=4, iterations=ITERS, checkpoint_every=10)
  assert job.run(ref)['exit_code'] == 1
  config = make_config(assets, d, tmp_path / 'out', batch_size=4, iterations=ITERS, checkpoint_every=10)
  args = cli_args(config)
  runner = lambda a: a[:2] + ['tests.fault_runner'] + a[2:]  # python -m tests.fault_runner launch.invert
  out = pathlib.Path(config.job.output_dir)

  # 1. SIGTERM to process 1 at its 3rd jitted call; calls slowed so that the notice is agreed mid-batch.
  slow = {'PMSFC_CALL_DELAY_S': '0.15'}
  runs = run_pod([runner(args)] * 2, tmp_path, ({**slow}, {**slow, 'PMSFC_FAULT': 'call:3:SIGTERM'}), 'term')
  _check(runs, [143, 143])
  assert "sending SIGTERM at 'call'" in runs[1].stderr and 'sending' not in runs[0].stderr
  step = _saved_step(runs[0].stderr)
  assert _saved_step(runs[1].stderr) == step and 3 <= step < ITERS  # the same call on both processes
  points = [re.findall(r'agreed by every process at sync point (\d+)', r.stderr) for r in runs]
  assert points[0] == points[1] and len(points[0]) == 1, points
  assert (out / batch_state.CHECKPOINTS / batch_state.GLOBAL).is_dir()
  assert all('PREEMPTED' in r.stdout for r in runs)

  # 2. The rerun resumes; process 1 is killed (-9) in the second global batch, after its checkpoint at 10.
  killed = args + [f'--config.job.heartbeat_timeout_s={HEARTBEAT_S}']
  runs = run_pod([runner(killed)] * 2, tmp_path, ({}, {'PMSFC_FAULT': f'call:{ITERS - step + 15}'}), 'kill')
  assert runs[1].returncode == -signal.SIGKILL
  kill_at = float(re.search(r"sending SIGKILL at 'call' t=([\d.]+)", runs[1].stderr).group(1))
  assert runs[0].returncode != 0, runs[0].stderr[-3000:]
  assert 'detected fatal errors' in runs[0].stderr or 'a peer died' in runs[0].stderr, runs[0].stderr[-3000:]
  assert runs[0].at - kill_at < HEARTBEAT_S + 30  # the documented bound, with slack for a loaded machine
  assert f'resuming a batch of 2 images from step {step}' in runs[0].stderr
  assert [r['name'] for r in manifest_lines(out)] == names[:4]  # the resumed batch is recorded

  # 3. Host meshes finish the job (batch 2 over each host's 2 devices: one image per device, as in the
  # reference); both hosts have images left.
  runs = run_pod([args + ['--config.job.mesh=host', '--batch_size=2']] * 2, tmp_path, label='finish')
  _check(runs, [1, 1])
  assert 'of another process count or mesh scope' in runs[0].stderr  # the global checkpoint, not resumed
  assert all('local mesh of 2 device(s), batch shape 2' in r.stderr for r in runs)
  recs = manifest(out)
  assert [r['name'] for r in recs] == names  # each once
  assert [r['status'] for r in recs] == ['ok'] * 3 + ['error'] + ['ok'] * 5 and 'truncated' in recs[3][
    'error'
  ]
  assert all('total 9: ok 8, failed 1, pending 0' in r.stdout for r in runs)
  ok = [n[:-4] for i, n in enumerate(names) if i != 3]
  assert_same_results(ref.job.output_dir, config.job.output_dir, ok)
  assert not list((out / batch_state.CHECKPOINTS).iterdir())


def manifest_lines(out):
  """Every process's manifest lines (before the merge), sorted by name."""
  recs = [json.loads(x) for p in sorted(out.glob('manifest.p*.jsonl')) for x in p.read_text().splitlines()]
  return sorted(recs, key=lambda r: r['name'])


# Early stop with refill (tests/test_refill.py's settings: images stop at different steps, 18-24, below the cap).
STOP = {'job.stop_tolerance': 0.05, 'job.stop_window': 3}


def test_pod_early_stop_with_refill_preempted_then_finished(assets, tmp_path):  # noqa: F811
  """Early stop with continuous refill on the global mesh: 7 images (shares of 4 and 3; process 1's second
  is truncated), a global batch of 4 = 2 slots per process, so process 1 runs out of images first and keeps
  its rows frozen while process 0 refills. SIGTERM to process 1 only, late enough that images have been
  recorded and slots refilled -> both exit 143 after the same call (one global slot checkpoint); the rerun
  resumes it and finishes: every image once, the bad one an error, every other with the steps, loss curve
  and codes of the single-process refill run (in this process; 2 slots on 2 devices, one row per device as
  on the pod: with both rows on one device XLA rounds differently, and Adam grows that to 1e-3 in a curve)."""
  d = tmp_path / 'in'
  names = write_images(d, 7)
  (d / names[3]).write_bytes((d / names[3]).read_bytes()[:60])
  ref = make_config(
    assets, d, tmp_path / 'ref', batch_size=2, iterations=40, **STOP, **{'job.num_devices': 2}
  )
  assert job.run(ref)['exit_code'] == 1
  steps = {r['name']: r['steps'] for r in manifest(ref.job.output_dir) if r['status'] == 'ok'}
  assert len(set(steps.values())) >= 3 and max(steps.values()) < 40, steps
  config = make_config(assets, d, tmp_path / 'out', batch_size=4, iterations=40, checkpoint_every=0, **STOP)
  args = cli_args(config) + [f'--config.{k}={v}' for k, v in STOP.items()]
  out = pathlib.Path(config.job.output_dir)

  # 1. SIGTERM to process 1 at its 20th call (slowed calls: the notice is agreed before the last one).
  slow = {'PMSFC_CALL_DELAY_S': '0.15'}
  runner = args[:2] + ['tests.fault_runner'] + args[2:]
  runs = run_pod([runner] * 2, tmp_path, (slow, {**slow, 'PMSFC_FAULT': 'call:20:SIGTERM'}), 'refill_term')
  _check(runs, [143, 143])
  saved = [re.findall(r'preempted: slot state saved after (\d+) steps', r.stderr) for r in runs]
  assert saved[0] == saved[1] and len(saved[0]) == 1 and int(saved[0][0]) >= 20, saved
  points = [re.findall(r'agreed by every process at sync point (\d+)', r.stderr) for r in runs]
  assert points[0] == points[1] and len(points[0]) == 1, points
  assert (out / batch_state.CHECKPOINTS / batch_state.GLOBAL).is_dir()
  recorded = [r['name'] for r in manifest_lines(out)]
  assert len(recorded) == len(set(recorded)) < 7, recorded

  # 2. The rerun resumes the slots of both processes at their own steps and finishes.
  runs = run_pod([args] * 2, tmp_path, label='refill_finish')
  _check(runs, [1, 1])
  assert all(f'slots after {saved[0][0]} steps' in r.stderr for r in runs), runs[0].stderr[-3000:]
  recs = manifest(out)
  assert [r['name'] for r in recs] == names and [r['name'] for r in manifest_lines(out)] == names  # once
  assert [r['status'] for r in recs] == ['ok'] * 3 + ['error'] + ['ok'] * 3 and 'truncated' in recs[3][
    'error'
  ]
  assert {r['process'] for r in recs} == {0, 1}
  assert all('total 7: ok 6, failed 1, pending 0' in r.stdout for r in runs)
  assert not list((out / batch_state.CHECKPOINTS).iterdir())
  assert {r['name']: r['steps'] for r in recs if r['status'] == 'ok'} == steps
  for name, n in steps.items():
    a, _ = load_result(out, name[:-4])
    b, _ = load_result(ref.job.output_dir, name[:-4])
    assert int(a['step']) == int(b['step']) == n
    np.testing.assert_allclose(a['loss_history'][:n], b['loss_history'][:n], rtol=1e-5, atol=1e-6)
    assert np.isnan(a['loss_history'][n:]).all()
    np.testing.assert_allclose(a['codes'], b['codes'], atol=2e-5, rtol=1e-4)


def test_hosts_that_list_different_inputs_are_refused(assets, tmp_path):  # noqa: F811
  d, fewer = tmp_path / 'in', tmp_path / 'fewer'
  names = write_images(d, 3)
  shutil.copytree(d, fewer)
  (fewer / names[-1]).unlink()
  config = make_config(assets, d, tmp_path / 'out' / 'sub', method='mganprior')
  args = cli_args(config)
  runs = run_pod([args, [a.replace(f'--images={d}', f'--images={fewer}') for a in args]], tmp_path)
  _check(runs, [2, 2])
  for r in runs:
    errors = [line for line in r.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    assert 'process 1 lists 2 inputs' in errors[0] and 'process 0 lists 3' in errors[0], errors
  assert not (tmp_path / 'out').exists()  # nothing written


# ------------------------------------------------------------------------------------------------
# The agreement rules, without a pod (a fake gather stands for the other process).


class _Views(multihost.Processes):
  """Process ``index`` of 2 whose peer saw ``peer(obj)``: gather / agree return both views."""

  def __init__(self, index, peer, lockstep=True):
    super().__init__(index, 2, lockstep)
    self.peer = peer

  def gather(self, obj):
    return [obj, self.peer(obj)] if self.index == 0 else [self.peer(obj), obj]


def test_lockstep_loops_run_as_often_as_the_busiest_process():
  peer_has = iter([True, True, False])  # the peer still has a batch twice
  assert list(_Views(0, lambda _: next(peer_has)).while_any([1], 0)) == [1, 0]
  assert list(multihost.Processes().while_any([1, 2], 0)) == [1, 2]
  assert list(_Views(0, lambda _: True, lockstep=False).while_any([1], 0)) == [1]  # independent hosts


def test_a_usage_error_on_one_process_ends_every_process_alike():
  def fail():
    raise config_lib.ConfigError('--generator=x: not found')

  peer_failed = lambda _: [False, '--generator=x: not found']
  with pytest.raises(config_lib.ConfigError, match=r'^process 1 of 2: --generator=x: not found$'):
    _Views(0, peer_failed).all_or_none(lambda: 'fine')
  with pytest.raises(config_lib.ConfigError, match=r'^process 1 of 2: --generator=x: not found$'):
    _Views(1, lambda _: None).all_or_none(fail)
  with pytest.raises(locks.FolderLocked, match=r'^process 0 of 2: OUT is in use$'):  # the lowest index wins
    _Views(1, lambda _: [True, 'OUT is in use']).all_or_none(fail)
  assert _Views(0, lambda _: None).all_or_none(lambda: 'fine') == 'fine'
  with pytest.raises(config_lib.ConfigError, match=r'^--generator=x: not found$'):  # one process: unchanged
    multihost.Processes().all_or_none(fail)


def test_processes_must_list_the_same_inputs_and_run_the_same_configuration(assets, tmp_path):  # noqa: F811
  cfg = make_config(assets, tmp_path, tmp_path / 'out', batch_size=4)
  items = [type('Item', (), {'name': n}) for n in ('a.png', 'b.png')]
  check = lambda peer, c=cfg: validate.same_everywhere(_Views(0, peer), items, c, 'fp0')
  check(lambda view: view)  # the same everywhere: accepted
  seen = []
  peer = config_lib.override(
    cfg, {'job.images': '/mnt/x', 'job.process_id': 1, 'job.coordinator_address': 'h:1'}
  )
  validate.same_everywhere(_Views(1, lambda view: seen.append(view) or view), items, peer, 'fp0')
  check(lambda view: seen[0])  # settings that are per host by nature may differ
  with pytest.raises(
    config_lib.ConfigError, match=r'--images=.*: process 1 lists 1 inputs .* process 0 lists 2'
  ):
    check(lambda view: dict(view, inputs=[1, 'x']))
  with pytest.raises(
    config_lib.ConfigError, match=r'^process 1 computes the configuration fingerprint fp1, process 0 fp0'
  ):
    check(lambda view: dict(view, fingerprint='fp1'))
  with pytest.raises(
    config_lib.ConfigError,
    match=r'^process 1 runs with other job settings than process 0 \(--config.job.batch_size, '
    r'--config.job.mesh\)',
  ):
    check(lambda view: dict(view, job=dict(view['job'], mesh='host', batch_size=2)))


def test_an_output_folder_a_host_does_not_see_is_refused(tmp_path, monkeypatch):
  """Hosts with only local disks: process 1 does not see the config.json process 0 recorded in OUT."""
  monkeypatch.setattr(output, 'SHARED_WAIT_S', 0.0)
  shared, local = tmp_path / 'shared', tmp_path / 'local'
  shared.mkdir(), local.mkdir()
  (shared / 'config.json').write_text(json.dumps({'fingerprint': 'fp0'}))
  output.check_shared(shared, 'fp0', _Views(0, lambda seen: seen))  # both see it
  message = r'^--output_dir=.*: process 1 does not see the config.json process 0 recorded there'
  with pytest.raises(config_lib.ConfigError, match=message):
    output.check_shared(shared, 'fp0', _Views(0, lambda seen: False))
  with pytest.raises(config_lib.ConfigError, match=message):
    output.check_shared(local, 'fp0', _Views(1, lambda seen: True))


@pytest.mark.parametrize('agree', [True, False])
def test_call_sizers_of_lockstep_processes_agree_on_every_call_length(agree):
  """Two hosts whose steps take different times (0.2 s and 0.45 s) calibrate the time-bounded call
  length (2 s per call) together: with the agreed (slowest) time they run calls of the same length; left
  alone they would not (the control)."""
  step_seconds, measured = {0: 0.2, 1: 0.45}, {}
  sizers = {h: loops.CallSizer(0, 2.0, backend='tpu') for h in (0, 1)}
  if agree:
    for sizer in sizers.values():
      sizer.agree = lambda seconds: max(measured.values())  # what Processes.agree_max returns
  lengths = {0: [], 1: []}
  for _ in range(8):
    n = {h: sizers[h].steps(64) for h in (0, 1)}
    measured = {h: n[h] * step_seconds[h] for h in (0, 1)}
    for h in (0, 1):
      lengths[h].append(n[h])
      if sizers[h].measuring:
        sizers[h].observe(n[h], measured[h])
  assert (lengths[0] == lengths[1]) == agree, lengths
  assert lengths[1][-1] == 4  # 4 steps of the slower host fit 2 s
