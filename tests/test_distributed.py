"""Mesh / sharding helpers and a 2-process `jax.distributed` run of the job on localhost CPU."""

import json
import os
import pathlib
import socket
import subprocess

import jax
import numpy as np
import pytest

from pmsfc_jax.core import mesh
from pmsfc_jax.jobs import multihost
from pmsfc_jax.jobs.invert import job
from tests.test_invert_job import REPO  # noqa: F401
from tests.test_invert_job import assert_same_results  # noqa: F401
from tests.test_invert_job import assets  # noqa: F401
from tests.test_invert_job import cli_args  # noqa: F401
from tests.test_invert_job import make_config  # noqa: F401
from tests.test_invert_job import write_images  # noqa: F401


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
  assert m.shape == {'data': jax.local_device_count()} == {'data': 4}
  s = mesh.shard_batch(p, m)
  assert len(s.addressable_shards) == 4 and s.addressable_shards[0].data.shape == (2, 2)
  r = mesh.replicate({'w': np.ones(3)}, m)
  assert r['w'].sharding.is_fully_replicated
  with pytest.raises(ValueError, match=r'cannot be split over 4 devices; pad the batch to a multiple of 4'):
    mesh.shard_batch(x, m)
  assert mesh.make_mesh(1).shape == {'data': 1}
  with pytest.raises(ValueError, match='num_devices=9 but this process has only 4 devices'):
    mesh.make_mesh(9)


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


def test_two_processes_share_the_work_and_merge_the_summary(assets, tmp_path):  # noqa: F811
  d = tmp_path / 'in'
  names = write_images(d, 7)
  ref = make_config(assets, d, tmp_path / 'ref', method='mganprior', batch_size=4)
  job.run(ref)
  config = make_config(assets, d, tmp_path / 'out', method='mganprior', batch_size=2)
  port = _free_port()
  procs = []
  for i in range(2):
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
    args = cli_args(config) + [
      '--distributed',
      f'--coordinator_address=127.0.0.1:{port}',
      '--num_processes=2',
      f'--process_id={i}',
    ]
    procs.append(
      subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    )
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, se) in zip(procs, outs):
    assert p.returncode == 0, se[-3000:]
  out = pathlib.Path(config.job.output_dir)
  shares = [
    [json.loads(x)['name'] for x in (out / f'manifest.p{i}.jsonl').read_text().splitlines()] for i in range(2)
  ]
  assert not set(shares[0]) & set(shares[1])
  assert sorted(shares[0] + shares[1]) == sorted(names)
  assert shares[0] == names[0::2] and shares[1] == names[1::2]
  merged = [json.loads(x) for x in (out / 'manifest.jsonl').read_text().splitlines()]
  assert [r['name'] for r in merged] == sorted(names)
  assert {r['process'] for r in merged} == {0, 1}
  summary = json.loads((out / 'summary.json').read_text())
  assert (summary['total'], summary['ok'], summary['failed'], summary['pending']) == (7, 7, 0, 0)
  assert summary['num_processes'] == 2 and summary['num_devices_per_process'] == 2
  assert 'total 7: ok 7, failed 0, pending 0' in outs[0][0]
  # Same per-image results as one process with 4 devices and another batch size.
  assert_same_results(ref.job.output_dir, config.job.output_dir, [n[:-4] for n in names])
