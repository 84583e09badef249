"""Multi-host start-up and the meeting points of the jobs: ``jax.distributed`` initialisation, each
process's share of the work, barriers, and :class:`Processes` (the one place where processes agree).

The batch job's mesh scopes are explained in ``core/mesh.py``: on a global mesh (the multi-host default)
every process dispatches the same programs in the same order, so every decision that leads to a program
(whether there is another batch, whether to resume a checkpoint, how many steps a call runs) is agreed
here, from what every process saw (:meth:`Processes.agree`), never decided by one process alone.

Dead peers. ``jax.distributed`` runs a coordination service (in process 0) that every process sends
heartbeats to. When a process dies (``kill -9``, a lost host), the service notices within
``heartbeat_timeout_s`` and JAX ends every other process with the fatal log line ``Terminating process
because the JAX distributed service detected fatal errors`` (SIGABRT, exit status 134); if process 0
dies, the others notice at once. So no process waits for ever on a peer that left: not in a collective,
a barrier, nor the preemption sync point. A collective with a dead peer may also fail first (gloo on CPU:
"Connection reset by peer"): the batch job then prints :func:`failed_with_peers`'s line and exits, and
JAX's shutdown barrier, which the dead peer never reaches, ends it with the same SIGABRT after the
heartbeat timeout. A process that exits while others still run (an error of its own) waits for them at
that shutdown barrier for at most the same timeout, then leaves, and they end as above.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

from pmsfc_jax.core import config
from pmsfc_jax.io import locks

T = TypeVar('T')

# Environment variables read by :func:`initialize` when the matching argument is not given (flags win).
# On Cloud TPU, SLURM, Open MPI, ... all three may stay unset: jax.distributed.initialize() detects them.
ENV_COORDINATOR = 'PMSFC_COORDINATOR_ADDRESS'
ENV_NUM_PROCESSES = 'PMSFC_NUM_PROCESSES'
ENV_PROCESS_ID = 'PMSFC_PROCESS_ID'


def initialize(
  coordinator_address: Optional[str] = None,
  num_processes: Optional[int] = None,
  process_id: Optional[int] = None,
  local_device_ids: Optional[Sequence[int]] = None,
  initialization_timeout: int = 300,
  heartbeat_timeout_s: int = config.Job.heartbeat_timeout_s,
) -> tuple[int, int]:
  """Starts ``jax.distributed`` and returns ``(process_index, process_count)``.

  Arguments left as ``None`` come from ``PMSFC_COORDINATOR_ADDRESS`` / ``PMSFC_NUM_PROCESSES`` /
  ``PMSFC_PROCESS_ID`` when set, otherwise from JAX's cluster auto-detection (TPU metadata, SLURM, MPI,
  ...). Must run before anything touches a JAX backend. Errors are NOT swallowed: a wrong address, a
  missing peer or a second call all raise. On CPU the gloo collectives are selected (needed by
  :func:`barrier`). ``heartbeat_timeout_s`` bounds how long the others live on after a process dies
  (module docstring); it is also JAX's shutdown timeout (how long an exiting process waits for the
  others).
  """
  if coordinator_address is None:
    coordinator_address = os.environ.get(ENV_COORDINATOR) or None
  if num_processes is None and os.environ.get(ENV_NUM_PROCESSES):
    num_processes = int(os.environ[ENV_NUM_PROCESSES])
  if process_id is None and os.environ.get(ENV_PROCESS_ID):
    process_id = int(os.environ[ENV_PROCESS_ID])
  given = {
    'coordinator_address': coordinator_address,
    'num_processes': num_processes,
    'process_id': process_id,
  }
  if coordinator_address is not None and (num_processes is None or process_id is None):
    missing = [k for k, v in given.items() if v is None]
    raise ValueError(
      f'distributed initialisation with coordinator_address={coordinator_address!r} also '
      f'needs {missing} (flags --num_processes/--process_id or ${ENV_NUM_PROCESSES}/'
      f'${ENV_PROCESS_ID})'
    )
  if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
    raise ValueError(f'process_id={process_id} is not in [0, num_processes={num_processes})')
  platforms = (os.environ.get('JAX_PLATFORMS') or jax.config.jax_platforms or '').lower()
  if 'cpu' in platforms.split(',')[:1]:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
    coordinator_address=coordinator_address,
    num_processes=num_processes,
    process_id=process_id,
    local_device_ids=local_device_ids,
    initialization_timeout=initialization_timeout,
    heartbeat_timeout_seconds=int(heartbeat_timeout_s),
    shutdown_timeout_seconds=int(heartbeat_timeout_s),
  )
  return jax.process_index(), jax.process_count()


def process_share(
  items: Sequence[T], process_index: Optional[int] = None, process_count: Optional[int] = None
) -> list[T]:
  """Process i's deterministic share: ``items[i::n]`` (disjoint, union = items, sizes differ by <= 1).

  ``items`` must be in the same order on every process (the job sorts by relative path).
  """
  i = jax.process_index() if process_index is None else process_index
  n = jax.process_count() if process_count is None else process_count
  if not 0 <= i < n:
    raise ValueError(f'process_index={i} is not in [0, {n})')
  return list(items[i::n])


def barrier(name: str, timeout_s: int = 3600) -> None:
  """Blocks until every process reaches ``barrier(name)`` (no-op for a single process)."""
  if jax.process_count() == 1:
    return
  del timeout_s  # sync_global_devices has no timeout (a dead peer ends the wait: module docstring).
  multihost_utils.sync_global_devices(name)


def failed_with_peers(error: Exception) -> str:
  """The one line of a process whose operation with the others failed (module docstring: dead peers)."""
  return (
    f'process {jax.process_index()} of {jax.process_count()}: an operation with the other processes failed, '
    f'a peer died or the network failed ({" ".join(str(error).split())[:300]}); rerun the same command on '
    'every host to resume'
  )


def allgather_json(obj: Any) -> list[Any]:
  """Every process's JSON-able ``obj``, in process order (a collective: all processes call it)."""
  if jax.process_count() == 1:
    return [obj]
  data = np.frombuffer(json.dumps(obj, sort_keys=True).encode(), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int32))).reshape(-1)
  # A power-of-two buffer: few distinct shapes, so the all-gather compiles a few times per job, not per call.
  buf = np.zeros(1 << max(6, int(sizes.max() - 1).bit_length()), np.uint8)
  buf[: data.size] = data
  rows = np.asarray(multihost_utils.process_allgather(buf))
  return [json.loads(rows[i, : sizes[i]].tobytes()) for i in range(len(sizes))]


class Processes:
  """The processes of one job run and how they meet (module docstring).

  ``lockstep``: the job runs one global mesh over several processes, so every process must take the same
  decisions at the same points. :meth:`gather` is a collective of every process (any multi-process run:
  start-up checks, the end); :meth:`agree` is the decision point of a loop: every process's view in
  lockstep, only this process's otherwise (independent hosts decide alone).
  """

  def __init__(self, index: int = 0, count: int = 1, lockstep: bool = False):
    self.index, self.count = int(index), int(count)
    self.lockstep = bool(lockstep) and self.count > 1

  def gather(self, obj: Any) -> list[Any]:
    return allgather_json(obj) if self.count > 1 else [obj]

  def agree(self, obj: Any) -> list[Any]:
    return self.gather(obj) if self.lockstep else [obj]

  def while_any(self, items: Iterable[T], empty: T) -> Iterator[T]:
    """The items of ``items``, then (in lockstep) ``empty`` while another process still has items: every
    process runs the loop body as often as the process with the most items. The check is made before
    each item, so a loop could as well be driven by "does any process still have work" alone."""
    it = iter(items)
    while True:
      item = next(it, None)
      if not any(self.agree(item is not None)):
        return
      yield empty if item is None else item

  def agree_max(self, value: float) -> float:
    return max(self.agree(float(value)))

  def all_or_none(self, fn: Callable[[], T]) -> T:
    """``fn()``; if it raises a usage error (``config.ConfigError``) or ``locks.FolderLocked`` on ANY
    process, every process raises the first such error (of the lowest process index, prefixed with it),
    so that they all end alike and none waits for a peer that gave up. One process: unchanged."""
    try:
      out, err = fn(), None
    except (config.ConfigError, locks.FolderLocked) as e:
      if self.count == 1:
        raise
      out, err = None, e
    errors = self.gather(None if err is None else [isinstance(err, locks.FolderLocked), str(err)])
    first = next((k for k, e in enumerate(errors) if e is not None), None)
    if first is None:
      return out
    locked, message = errors[first]
    raise (locks.FolderLocked if locked else config.ConfigError)(
      f'process {first} of {self.count}: {message}'
    )
