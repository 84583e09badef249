"""Multi-host start-up and meeting points of the jobs: ``jax.distributed`` initialisation, each process's
share of the work, barriers (see ``core/mesh.py`` for why the batch job gives each host its own mesh).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, TypeVar

import jax
from jax.experimental import multihost_utils

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
) -> tuple[int, int]:
  """Starts ``jax.distributed`` and returns ``(process_index, process_count)``.

  Arguments left as ``None`` come from ``PMSFC_COORDINATOR_ADDRESS`` / ``PMSFC_NUM_PROCESSES`` /
  ``PMSFC_PROCESS_ID`` when set, otherwise from JAX's cluster auto-detection (TPU metadata, SLURM, MPI,
  ...). Must run before anything touches a JAX backend. Errors are NOT swallowed: a wrong address, a
  missing peer or a second call all raise. On CPU the gloo collectives are selected (needed by
  :func:`barrier`).
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
  del timeout_s  # sync_global_devices has no timeout; kept for API stability.
  multihost_utils.sync_global_devices(name)
