"""Device mesh and batch sharding (jax only; multi-host start-up is ``jobs/multihost.py``).

Layout. Every image is optimised independently (``inversion`` vmaps over the batch), so the job is
embarrassingly parallel: a batch is laid out along one mesh axis ``'data'`` that spans the devices of the
process (``jax.make_mesh`` + ``NamedSharding(mesh, P('data'))``); generator / VGG parameters are
replicated (``P()``). A batch of ``8 * D`` images therefore runs on ``D`` devices with unchanged code; the
last partial batch is padded to the fixed batch shape (one compilation) and the padding discarded.

Multi-host. Behind an explicit flag the batch job calls ``multihost.initialize``
(``jax.distributed.initialize``); each process then takes a deterministic disjoint share of the sorted
image list (``multihost.process_share``) and runs it on a mesh of its *local* devices. Deviation from a single global mesh, on purpose: with no
cross-image communication, per-host meshes need no collective per step, a slow or preempted host never
stalls the others, and each host checkpoints / resumes its own share independently. Processes only meet
at start-up (configuration check) and at the end (``multihost.barrier``, then process 0 merges the
manifests).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, TypeVar

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'
T = TypeVar('T')


def make_mesh(num_devices: Optional[int] = None, devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A 1-D mesh with axis ``'data'`` over this process's devices (the first ``num_devices`` if given)."""
  devs = list(devices) if devices is not None else list(jax.local_devices())
  if num_devices:
    if num_devices > len(devs):
      raise ValueError(f'num_devices={num_devices} but this process has only {len(devs)} devices')
    devs = devs[:num_devices]
  # Auto axis types: the compiler propagates the batch sharding through the vmapped inversion (with
  # Explicit types, vmap would demand that every mapped input carries the same sharding in its type).
  return jax.make_mesh((len(devs),), (DATA_AXIS,), devices=devs, axis_types=(jax.sharding.AxisType.Auto,))


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
      raise ValueError(
        f'batch leaf of shape {np.shape(leaf)} cannot be split over {d} devices; pad the '
        f'batch to a multiple of {d} (mesh.padded_size)'
      )
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


def to_host(tree: T) -> T:
  """Device arrays -> numpy (host), for writing results."""
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)) if isinstance(x, jax.Array) else x, tree)
