"""Device mesh and batch sharding (jax only; multi-host start-up and agreement are ``jobs/multihost.py``).

Layout. Every image is optimised independently (``inversion`` vmaps over the batch), so the job is
embarrassingly parallel: a batch is laid out along one mesh axis ``'data'`` (``jax.make_mesh`` +
``NamedSharding(mesh, P('data'))``); generator / VGG parameters are replicated (``P()``). A batch of
``8 * D`` images therefore runs on ``D`` devices with unchanged code; the last partial batch is padded to
the fixed batch shape (one compilation) and the padding discarded.

Multi-host (``--distributed``; :func:`job_mesh`). Each process takes a deterministic disjoint share of the
sorted image list (``multihost.process_share``). Two scopes of the batch job's mesh:

* ``'global'`` (the multi-host default): ONE mesh over every device of every process, as JAX pod
  codebases run (MaxText, ...): one SPMD program over the whole slice, which is what XLA:TPU requires on
  v5e slices above 4x4 ("device assignment should include all slice devices"). Each process supplies
  its own rows of every global batch (:func:`put_rows`: ``jax.make_array_from_process_local_data``)
  and reads back only the rows it holds (:func:`to_host`: its addressable shards), so no image crosses
  hosts. The step has no collective (images are independent), but the processes must dispatch the same
  programs in the same order: they run in lockstep (``jobs/invert/job.py``).
* ``'host'``: a mesh of the process's *local* devices; hosts are independent (no lockstep, a slow or
  preempted host never stalls the others, each checkpoints its own share). XLA:TPU refuses such a
  program on v5e slices above 4x4.

A single process has one mesh of its devices either way (the job's behaviour before pods).
"""

from __future__ import annotations

import collections
from typing import Any, Optional, Sequence, TypeVar

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'
SCOPES = ('global', 'host')  # job.mesh: the batch job's mesh on several processes (module docstring)
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


def job_mesh(scope: str, num_devices: Optional[int] = None, devices: Optional[Sequence[Any]] = None) -> Mesh:
  """The batch job's mesh (module docstring); ``launch.plan`` compiles on it too (one code path).

  ``scope='host'``: the devices of one process (``jax.local_devices()``, or of the first process of
  ``devices``): :func:`make_mesh`. ``'global'``: every device of every process (``jax.devices()`` or
  ``devices``). ``num_devices``: only the first N devices of each process.
  """
  if scope not in SCOPES:
    raise ValueError(f'mesh scope must be one of {SCOPES}, got {scope!r}')
  if scope == 'host':
    devs = list(devices) if devices is not None else list(jax.local_devices())
    return make_mesh(num_devices, [d for d in devs if d.process_index == devs[0].process_index])
  devs = list(devices) if devices is not None else list(jax.devices())
  if num_devices:
    per_process = collections.defaultdict(list)
    for d in devs:
      per_process[d.process_index].append(d)
    short = min(per_process.values(), key=len)
    if num_devices > len(short):
      raise ValueError(
        f'num_devices={num_devices} but process {short[0].process_index} has only {len(short)} devices'
      )
    keep = {d for ds in per_process.values() for d in ds[:num_devices]}
    devs = [d for d in devs if d in keep]
  return make_mesh(devices=devs)


def process_count(mesh: Mesh) -> int:
  """How many processes hold devices of ``mesh`` (> 1: the batch job's global mesh on a pod)."""
  return len({d.process_index for d in mesh.devices.flat})


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


def put_rows(x: np.ndarray, mesh: Mesh, batch_shape: int) -> jax.Array:
  """This process's rows of a batch of ``batch_shape`` rows, laid out over ``mesh`` along ``'data'``.

  A mesh of this process's devices: ``x`` is the whole batch, padded to ``batch_shape`` (:func:`pad_batch`)
  and sharded (:func:`shard_batch`). A mesh over several processes: ``x`` is this process's block of
  ``batch_shape / process count`` rows (padded likewise; zeros when it has no row of its own), and the
  global array is made with ``jax.make_array_from_process_local_data``.
  """
  x = np.asarray(x)
  if process_count(mesh) == 1:
    return shard_batch(pad_batch(x, batch_shape), mesh)
  rows = batch_shape // process_count(mesh)
  local = pad_batch(x, rows) if len(x) else np.zeros((rows,) + x.shape[1:], x.dtype)
  return jax.make_array_from_process_local_data(batch_sharding(mesh), local, (batch_shape,) + x.shape[1:])


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
  """Device arrays -> numpy (host), for writing results. An array spread over several processes gives
  the rows this process holds (its addressable shards in global order: the rows :func:`put_rows` took),
  so nothing crosses hosts."""

  def host(x):
    if not isinstance(x, jax.Array):
      return x
    if x.is_fully_addressable:
      return np.asarray(jax.device_get(x))
    shards = {s.index[0].start or 0: s for s in x.addressable_shards} if x.ndim else {}
    if not shards:
      return np.asarray(x.addressable_data(0))  # a replicated scalar: every process holds it whole
    return np.concatenate([np.asarray(shards[k].data) for k in sorted(shards)])

  return jax.tree.map(host, tree)
