"""kill -9 the `launch.invert` job at random points (mid-batch, during a write, ...), restart, compare.

The kill points come from the test-owned runner ``tests/fault_runner.py`` (``PMSFC_FAULT``): the job
SIGKILLs itself the n-th time it reaches a named point, n drawn at random (seed printed; set
``PMSFC_KILL_SEED`` to replay). After the kills a final run completes the job; every image must be in
the manifest exactly once and on disk, and equal to an uninterrupted run with the same seeds.
"""

import os
import random
import signal
import subprocess
import time

from pmsfc_jax.jobs.invert import job
from pmsfc_jax.jobs.invert import manifest as manifest_lib
from tests.test_invert_job import REPO  # noqa: F401
from tests.test_invert_job import assert_complete  # noqa: F401
from tests.test_invert_job import assert_same_results  # noqa: F401
from tests.test_invert_job import assets  # noqa: F401
from tests.test_invert_job import cli_args  # noqa: F401
from tests.test_invert_job import make_config  # noqa: F401
from tests.test_invert_job import write_images  # noqa: F401


def _run(args, cache_dir, fault=None, timeout=240):
  env = dict(os.environ)
  env.pop('PMSFC_FAULT', None)
  # Restarts reuse compiled programs (the job itself is unaffected): keeps the suite fast.
  env.setdefault('JAX_COMPILATION_CACHE_DIR', str(cache_dir))
  env.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  env.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')
  if fault:
    env['PMSFC_FAULT'] = fault
    args = [args[0], '-m', 'tests.fault_runner', *args[2:]]  # args: python -m launch.invert ...
  return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_kill9_at_random_points_then_resume(assets, tmp_path):  # noqa: F811
  seed = int(os.environ.get('PMSFC_KILL_SEED', time.time_ns() % 10**6))
  rnd = random.Random(seed)
  print(f'PMSFC_KILL_SEED={seed}')
  d = tmp_path / 'in'
  names = write_images(d, 5)
  # 5 images, batches of 2 (3 batches), 6 steps per batch in chunks of 2 with a checkpoint after
  # steps 2 and 4: per run 9 'chunk', 6 'checkpoint', 10 'write' (png + npz per image), 5 manifest lines.
  ref = make_config(assets, d, tmp_path / 'ref', batch_size=2)
  job.run(ref)
  config = make_config(assets, d, tmp_path / 'out', batch_size=2)
  args = cli_args(config)
  faults = [
    f'chunk:{rnd.randint(1, 2)}',  # mid-batch, before / after the first checkpoint
    f'write:{rnd.randint(1, 4)}',  # between a result file's temp write and its rename
    rnd.choice(
      [
        f'manifest_torn:{rnd.randint(1, 2)}',  # half a manifest line on disk
        f'checkpoint:{rnd.randint(1, 3)}',  # right after a checkpoint
        'batch_done:1',
      ]
    ),  # results written, checkpoint not yet removed
  ]
  print('faults:', faults)
  killed = []
  for fault in faults:
    p = _run(args, tmp_path / 'jax_cache', fault)
    assert p.returncode in (-signal.SIGKILL, 0), (fault, p.returncode, p.stderr[-3000:])
    if p.returncode == -signal.SIGKILL:
      killed.append(fault)
      recs, _ = manifest_lib.read_jsonl(tmp_path / 'out' / 'manifest.jsonl')  # (tolerates a torn line)
      assert len({r['name'] for r in recs}) == len(recs)  # Never a duplicate, even before repair.
    else:
      break
  assert len(killed) >= 3, (seed, killed)
  p = _run(args, tmp_path / 'jax_cache')
  assert p.returncode == 0, p.stderr[-3000:]
  assert 'total 5: ok 5, failed 0, pending 0' in p.stdout
  assert_complete(config.job.output_dir, names)
  assert_same_results(ref.job.output_dir, config.job.output_dir, [n[:-4] for n in names])
