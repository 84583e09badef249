"""Device mesh, batch sharding and multi-host start-up for the batch inversion job.

Layout. Every image is optimised independently (``inversion`` vmaps over the batch), so the job is
embarrassingly parallel: a batch is laid out along one mesh axis ``'data'`` that spans the devices of the
process (``jax.make_mesh`` + ``NamedSharding(mesh, P('data'))``); generator / VGG parameters are
replicated (``P()``). A batch of ``8 * D`` images therefore runs on ``D`` devices with unchanged code; the
last partial batch is padded to the fixed batch shape (one compilation) and the padding discarded.

Multi-host. Behind an explicit flag the job calls :func:`initialize` (``jax.distributed.initialize``);
each process then takes a deterministic disjoint share of the sorted image list (:func:`process_share`)
and runs it on a mesh of its *local* devices. Deviation from a single global mesh, on purpose: with no
cross-image communication, per-host meshes need no collective per step, a slow or preempted host never
stalls the others, and each host checkpoints / resumes its own share independently. Processes only meet
at start-up (configuration check) and at the end (:func:`barrier`, then process 0 merges the manifests).
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'
T = TypeVar('T')

# Environment variables read by :func:`initialize` when the matching argument is not given (flags win).
# On Cloud TPU, SLURM, Open MPI, ... all three may stay unset: jax.distributed.initialize() detects them.
ENV_COORDINATOR = 'PMSFC_COORDINATOR_ADDRESS'
ENV_NUM_PROCESSES = 'PMSFC_NUM_PROCESSES'
ENV_PROCESS_ID = 'PMSFC_PROCESS_ID'


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, local_device_ids: Optional[Sequence[int]] = None,
               initialization_timeout: int = 300) -> tuple[int, int]:
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
  given = {'coordinator_address': coordinator_address, 'num_processes': num_processes,
           'process_id': process_id}
  if coordinator_address is not None and (num_processes is None or process_id is None):
    missing = [k for k, v in given.items() if v is None]
    raise ValueError(f'distributed initialisation with coordinator_address={coordinator_address!r} also '
                     f'needs {missing} (flags --num_processes/--process_id or ${ENV_NUM_PROCESSES}/'
                     f'${ENV_PROCESS_ID})')
  if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
    raise ValueError(f'process_id={process_id} is not in [0, num_processes={num_processes})')
  platforms = (os.environ.get('JAX_PLATFORMS') or jax.config.jax_platforms or '').lower()
  if 'cpu' in platforms.split(',')[:1]:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id, local_device_ids=local_device_ids,
                             initialization_timeout=initialization_timeout)
  return jax.process_index(), jax.process_count()


def make_mesh(num_devices: Optional[int] = None, devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A 1-D mesh with axis ``'data'`` over this process's devices (the first ``num_devices`` if given)."""
  devs = list(devices) if devices is not None else list(jax.local_devices())
  if num_devices:
    if num_devices > len(devs):
      raise ValueError(f'num_devices={num_devices} but this process has only {len(devs)} devices')
    devs = devs[:num_devices]
  # Auto axis types: the compiler propagates the batch sharding through the vmapped inversion (with
  # Explicit types, vmap would demand that every mapped input carries the same sharding in its type).
  return jax.make_mesh((len(devs),), (DATA_AXIS,), devices=devs,
                       axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over ``'data'``, other axes whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def shard_batch(tree: T, mesh: Mesh) -> T:
  """``device_put`` every leaf with its leading axis over ``'data'`` (leading dim divisible by D)."""
  sharding = batch_sharding(mesh)
  d = mesh.shape[DATA_AXIS]
  for leaf in jax.tree.leaves(tree):
    if np.ndim(leaf) == 0 or np.shape(leaf)[0] % d:
      raise ValueError(f'batch leaf of shape {np.shape(leaf)} cannot be split over {d} devices; pad the '
                       f'batch to a multiple of {d} (distributed.padded_size)')
  return jax.device_put(tree, sharding)


def replicate(tree: T, mesh: Mesh) -> T:
  """``device_put`` every leaf whole onto every device of the mesh (generator / VGG params)."""
  return jax.device_put(tree, replicated_sharding(mesh))


def padded_size(batch_size: int, num_devices: int) -> int:
  """The fixed batch shape: ``batch_size`` rounded up to a multiple of the device count."""
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  return -(-batch_size // num_devices) * num_devices


def pad_batch(x: np.ndarray, size: int) -> np.ndarray:
  """Pads the leading axis of ``x`` to ``size`` by repeating its first row (real data: no NaN risk)."""
  x = np.asarray(x)
  n = x.shape[0]
  if n == 0:
    raise ValueError('cannot pad an empty batch')
  if n > size:
    raise ValueError(f'batch of {n} is larger than the padded size {size}')
  if n == size:
    return x
  return np.concatenate([x, np.repeat(x[:1], size - n, axis=0)], axis=0)


def process_share(items: Sequence[T], process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> list[T]:
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
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  del timeout_s  # sync_global_devices has no timeout; kept for API stability.
  multihost_utils.sync_global_devices(name)


def unreplicate_to_host(tree: T) -> T:
  """Device arrays -> numpy (host), for writing results."""
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)) if isinstance(x, jax.Array) else x, tree)


