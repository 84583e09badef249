"""Runs a launch module with fault injection, for the kill / resume tests; production code has no hooks.

  PMSFC_FAULT='point:n[:SIGNAL][,...]' python -m tests.fault_runner launch.invert ARGS

sends SIGKILL (or SIGNAL) to the process the n-th time the batch job reaches ``point``:

* ``chunk``: after a ``run_steps`` call (a chunk of steps between checkpoints);
* ``call``: after one jitted call inside ``run_steps`` or the refill loop (one step on the per-step
  path, a ``lax.scan`` of ``steps_per_call`` steps otherwise);
* ``checkpoint``: right after the batch state is saved;
* ``write``: between a result file's (PNG / NPZ) temporary write and its rename;
* ``manifest_torn``: after half of a manifest line is on disk;
* ``batch_done``: the batch's results are recorded, its checkpoint not yet removed.

``PMSFC_CALL_DELAY_S=x`` also sleeps x seconds after every jitted call (a slow device: keeps a job busy
for as long as a test needs, e.g. until a preemption notice reaches every process of a pod).
"""

import collections
import os
import runpy
import signal
import sys
import time

from pmsfc_jax.core import inversion
from pmsfc_jax.io import files
from pmsfc_jax.jobs.invert import batch_state
from pmsfc_jax.jobs.invert import manifest

_counts = collections.Counter()


def _due(spec: str, point: str):
  """The signal to send at this visit of ``point``, or None."""
  for part in filter(None, spec.split(',')):
    fields = part.strip().split(':')
    if fields[0] == point:
      _counts[point] += 1
      if _counts[point] == int(fields[1]):
        return getattr(signal, fields[2]) if len(fields) > 2 else signal.SIGKILL
  return None


def _kill(sig, point: str) -> None:
  # The wall time lets a test measure how long the job took to act on the signal.
  print(
    f'fault_runner: sending {signal.Signals(sig).name} at {point!r} t={time.time():.3f}',
    file=sys.stderr,
    flush=True,
  )
  os.kill(os.getpid(), sig)
  if sig == signal.SIGKILL:
    time.sleep(60)


def install(spec: str) -> None:
  """Wraps the job's functions so that the faults of ``spec`` happen."""

  def hit(point):
    sig = _due(spec, point)
    if sig is not None:
      _kill(sig, point)

  delay = float(os.environ.get('PMSFC_CALL_DELAY_S') or 0)

  def after(fn, point):
    def wrapped(*args, **kwargs):
      out = fn(*args, **kwargs)
      if point == 'call' and delay:
        time.sleep(delay)
      hit(point)
      return out

    return wrapped

  def before(fn, point):
    def wrapped(*args, **kwargs):
      hit(point)
      return fn(*args, **kwargs)

    return wrapped

  replace, append = files.replace, manifest.Manifest.append

  def replace_result(src, dst):
    if str(dst).endswith(('.png', '.npz')):
      hit('write')
    replace(src, dst)

  def torn_append(self, record):
    sig = _due(spec, 'manifest_torn')
    if sig is not None:
      line = manifest.line(record)
      with open(os.fspath(self.path), 'ab') as f:
        f.write(line[: len(line) // 2])
        f.flush()
        os.fsync(f.fileno())
      _kill(sig, 'manifest_torn')
    append(self, record)

  inversion.run_steps = after(inversion.run_steps, 'chunk')
  inversion._run_steps_jit = after(inversion._run_steps_jit, 'call')
  inversion.run_steps_jit = after(inversion.run_steps_jit, 'call')  # the refill loop's calls
  batch_state.BatchCheckpoint.save = after(batch_state.BatchCheckpoint.save, 'checkpoint')
  batch_state.BatchCheckpoint.discard = before(batch_state.BatchCheckpoint.discard, 'batch_done')
  files.replace = replace_result
  manifest.Manifest.append = torn_append


if __name__ == '__main__':
  module = sys.argv[1]
  install(os.environ.get('PMSFC_FAULT', ''))
  sys.argv = [module, *sys.argv[2:]]
  runpy.run_module(module, run_name='__main__', alter_sys=True)
