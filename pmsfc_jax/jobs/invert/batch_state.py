"""The optimisation state of the batch in progress: an orbax checkpoint.

Every ``job.checkpoint_every`` steps the batch's ``InversionState`` (codes, weights, optimizer state,
step, per-image keys, loss history) is saved, also at a preemption notice; on restart the interrupted
batch continues from it (results equal an uninterrupted run: ``run_steps`` chunks compose). It is
discarded once the batch's results are recorded. Where (``core/mesh.py`` for the mesh scopes):

* a mesh of the process's own devices (one process, or hosts with their own meshes):
  ``OUT/.checkpoints/p<process>``, saved by that process alone (no cross-host barrier);
* the global mesh: ``OUT/.checkpoints/global``, ONE checkpoint of the global batch, saved and restored by
  every process together (orbax: each process writes the rows it holds), in lockstep. Its metadata names
  the images of every process (``names[i]``: process i's rows; with early stop, process i's refill slots,
  :func:`check_slots`). A rerun with the same process count
  resumes it exactly; with another process count the shares differ, so it is not resumed (the batch
  restarts from step 0, never a mix of states), and folders of another layout are removed at start-up.

Trust model: a checkpoint is data read back from disk, not an instruction. Its metadata holds only the
batch's image *names*, its batch shape, the configuration fingerprint, the input size and a digest of
these (:func:`batch_meta`); no path or output stem is ever read from it. :func:`check_meta` accepts it
only when the digest matches, the fingerprint and input size are the current ones, the step is inside the
run, the batch shape is sane for the current devices, and every name is in this process's share of the
*current* listing: the batch's items (paths, stems) are then taken from that listing. Anything else, and
any failure to restore the state, discards the checkpoint with a warning and the batch restarts from
step 0.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional, Sequence

import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from pmsfc_jax.core import mesh
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import files
from pmsfc_jax.jobs import multihost

CHECKPOINTS = '.checkpoints'
GLOBAL = 'global'
_META_KEYS = ('names', 'batch_shape', 'fingerprint', 'input_size')


class Unusable(ValueError):
  """A batch checkpoint that must not be resumed (the message says why)."""


def _digest(meta: dict) -> str:
  return hashlib.sha256(json.dumps([meta.get(k) for k in _META_KEYS], sort_keys=True).encode()).hexdigest()


def batch_meta(names: Sequence[str], batch_shape: int, fingerprint: str, input_size: int) -> dict:
  """The metadata saved with a batch's state: names (never paths), shape, fingerprint, digest."""
  meta = {
    'names': list(names),
    'batch_shape': int(batch_shape),
    'fingerprint': fingerprint,
    'input_size': int(input_size),
  }
  return dict(meta, digest=_digest(meta))


def _split(names: Any, process: Optional[tuple[int, int]]) -> tuple[Any, Any]:
  """(this process's names, every name) of a checkpoint's ``names``: a list of process i's lists on the
  global mesh (``process=(i, n)``), else one list, this process's."""
  if process is None:
    return names, names
  if not (isinstance(names, list) and all(isinstance(n, list) for n in names)):
    raise Unusable('it is not the checkpoint of a global batch')
  if len(names) != process[1]:
    raise Unusable(f'it was saved by {len(names)} processes, not {process[1]}: the shares differ')
  return names[process[0]], [n for rows in names for n in rows]


def check_meta(
  meta: Any,
  step: int,
  iterations: int,
  fingerprint: str,
  input_size: int,
  num_devices: int,
  max_batch_shape: int,
  share: Sequence[str],
  process: Optional[tuple[int, int]] = None,
) -> list[str]:
  """The names of a resumable checkpoint's batch (``process=(i, n)``, a global batch: process i's rows),
  or :class:`Unusable` (see the module docstring)."""
  if not isinstance(meta, dict) or meta.get('digest') != _digest(meta):
    raise Unusable('its metadata is not in the current format or does not match its digest')
  own, names = _split(meta.get('names'), process)
  shape = meta.get('batch_shape')
  if meta.get('fingerprint') != fingerprint:
    raise Unusable('it belongs to another configuration')
  if meta.get('input_size') != input_size:
    raise Unusable(f'its input size {meta["input_size"]} is not {input_size}')
  if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
    raise Unusable('it names no images')
  if len(set(names)) != len(names):
    raise Unusable('it names an image twice')
  if not 0 < int(step) < iterations:
    raise Unusable(f'its step {step} is not inside the run (1..{iterations - 1})')
  bound = max(max_batch_shape, -(-len(names) // num_devices) * num_devices)
  if not (isinstance(shape, int) and len(names) <= shape <= bound and shape % num_devices == 0):
    raise Unusable(f'its batch shape {shape!r} does not fit {len(names)} images on {num_devices} device(s)')
  missing = set(own) - set(share)
  if missing:
    raise Unusable(
      f"{len(missing)} of its images are not in this process's share of the current inputs (the input list or "
      'the process count changed)'
    )
  return list(own)


def check_slots(
  meta: Any,
  fingerprint: str,
  input_size: int,
  batch_shape: int,
  share: Sequence[str],
  process: Optional[tuple[int, int]] = None,
) -> list[str]:
  """The slot names (``''`` = empty) of a resumable refill checkpoint (``refill.py``; ``process=(i, n)``,
  the global mesh: process i's slots), or :class:`Unusable`: the same checks as :func:`check_meta`, with
  one name per row of the current batch shape (in lockstep the same process count and equal shares)."""
  if not isinstance(meta, dict) or meta.get('digest') != _digest(meta):
    raise Unusable('its metadata is not in the current format or does not match its digest')
  own, names = _split(meta.get('names'), process)
  if process is not None and any(len(rows) != batch_shape // process[1] for rows in meta['names']):
    raise Unusable(f'its slots do not match the current batch shape {batch_shape}')
  if meta.get('fingerprint') != fingerprint:
    raise Unusable('it belongs to another configuration')
  if meta.get('input_size') != input_size:
    raise Unusable(f'its input size {meta["input_size"]} is not {input_size}')
  if meta.get('batch_shape') != batch_shape or not (isinstance(names, list) and len(names) == batch_shape):
    raise Unusable(f'its slots do not match the current batch shape {batch_shape}')
  if not all(isinstance(n, str) for n in names):
    raise Unusable('its slot names are not strings')
  held = [n for n in names if n]
  if len(set(held)) != len(held):
    raise Unusable('it names an image twice')
  missing = {n for n in own if n} - set(share)
  if missing:
    raise Unusable(
      f"{len(missing)} of its images are not in this process's share of the current inputs (the input list or "
      'the process count changed)'
    )
  return list(own)


class BatchCheckpoint:
  """orbax CheckpointManager of the current batch: this process's (``OUT/.checkpoints/p<i>``) or, in
  lockstep on the global mesh, every process's together (``OUT/.checkpoints/global``); module docstring."""

  def __init__(self, root: epath.Path, processes: multihost.Processes):
    self.procs = processes
    self.dir = root / (GLOBAL if processes.lockstep else f'p{processes.index}')
    self.process = None if processes.lockstep else (processes.index, processes.count)
    self._mngr: Optional[ocp.CheckpointManager] = None

  def _manager(self) -> ocp.CheckpointManager:
    if self._mngr is None:
      self._mngr = checkpoints.checkpoint_manager(
        self.dir, max_to_keep=1, item_names=('state', 'meta'), process=self.process
      )
    return self._mngr

  def meta(self, names: Sequence[Sequence[str]], batch_shape: int, fingerprint: str, input_size: int) -> dict:
    """:func:`batch_meta` of a batch whose rows hold ``names[i]`` of process i (of this process alone,
    ``names[0]``, unless in lockstep)."""
    rows = [list(n) for n in names] if self.procs.lockstep else list(names[0])
    return batch_meta(rows, batch_shape, fingerprint, input_size)

  def _process(self) -> Optional[tuple[int, int]]:
    return (self.procs.index, self.procs.count) if self.procs.lockstep else None

  def check(self, meta: Any, step: int, *args: Any) -> list[str]:
    """:func:`check_meta` (its arguments after ``step``) -> this process's names of the batch."""
    return check_meta(meta, step, *args, process=self._process())

  def check_slots(self, meta: Any, *args: Any) -> list[str]:
    """:func:`check_slots` (its arguments after ``meta``) -> this process's slot names."""
    return check_slots(meta, *args, process=self._process())

  def latest(self) -> Optional[tuple[int, dict]]:
    """(step, meta) of the saved batch, or None; :class:`Unusable` when it cannot be read. In lockstep every
    process opens the checkpoint if any sees it (orbax's manager is a collective)."""
    if not any(self.procs.agree(self.dir.exists())):
      return None
    try:
      step = self._manager().latest_step()
      if step is None:
        return None
      meta = self._manager().restore(step, args=checkpoints.restore_args(json=['meta']))['meta']
      return step, dict(meta)
    except Exception as e:  # pylint: disable=broad-except
      raise Unusable(f'it cannot be read ({type(e).__name__}: {str(e)[:300]})') from None

  def _tree(self, state: Any) -> Any:
    # Process-local checkpoints hold numpy; the global one the global arrays (each process its rows).
    return state if self.procs.lockstep else mesh.to_host(state)

  def save(self, step: int, state: Any, meta: dict) -> None:
    self._manager().save(
      step, args=checkpoints.save_args(trees={'state': self._tree(state)}, json={'meta': meta}), force=True
    )
    self._manager().wait_until_finished()

  def restore(self, step: int, like: Any, uniform_step: bool = True) -> Any:
    """The saved state at ``step`` in ``like``'s structure; raises :class:`Unusable` on any failure.

    ``uniform_step``: every row at ``step`` (a batch); else (refill slots, rows at their own steps) every
    row's step within ``[0, optim.iterations]`` (the loss history's length)."""
    try:
      state = self._manager().restore(step, args=checkpoints.restore_args(trees={'state': self._tree(like)}))[
        'state'
      ]
    except Exception as e:  # pylint: disable=broad-except
      raise Unusable(f'its state cannot be restored ({type(e).__name__}: {str(e)[:300]})') from None
    steps = getattr(state, 'step', None)
    if steps is None:
      raise Unusable('its state has no step')
    steps = mesh.to_host(steps)  # (this process's rows)
    if uniform_step and not np.all(steps == step):
      raise Unusable(f'its state is not at step {step}')
    if not uniform_step and not np.all((steps >= 0) & (steps <= state.loss_history.shape[-1])):
      raise Unusable('its rows are not at steps inside the run')
    return state

  def discard(self) -> None:
    """Removes the checkpoint (in lockstep: every process calls it; process 0 removes the folder between
    two barriers, so that no process reads or writes it meanwhile)."""
    self.close()
    if not self.procs.lockstep:
      files.remove_tree(self.dir)
      return
    multihost.barrier('pmsfc_checkpoint_discard')
    if self.procs.index == 0:
      files.remove_tree(self.dir)
    multihost.barrier('pmsfc_checkpoint_discarded')

  def close(self) -> None:
    if self._mngr is not None:
      self._mngr.close()
      self._mngr = None


def folder_names(processes: multihost.Processes) -> list[str]:
  """The checkpoint folders of the current layout (module docstring)."""
  return [GLOBAL] if processes.lockstep else [f'p{i}' for i in range(processes.count)]


def remove_other_layouts(root: epath.Path, processes: multihost.Processes) -> None:
  """Removes checkpoint folders the current layout does not use (another mesh scope or process count);
  process 0 calls it under its lock, before the others read any checkpoint."""
  if root.exists():
    keep = set(folder_names(processes))
    for p in root.iterdir():
      if p.is_dir() and p.name not in keep and not p.name.startswith(files.TRASH_PREFIX):
        logging.warning('removing the batch checkpoint %s of another process count or mesh scope', p)
        files.remove_tree(p)
