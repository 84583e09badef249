"""The optimisation state of the batch in progress: an orbax checkpoint per process.

Every ``job.checkpoint_every`` steps the batch's ``InversionState`` (codes, weights, optimizer state,
step, per-image keys, loss history) is saved in ``OUT/.checkpoints/p<process>`` (process-local: no
cross-host barrier), also at a preemption notice; on restart the interrupted batch continues from it
(results equal an uninterrupted run: ``run_steps`` chunks compose). It is discarded once the batch's
results are recorded.

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

CHECKPOINTS = '.checkpoints'
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


def check_meta(
  meta: Any,
  step: int,
  iterations: int,
  fingerprint: str,
  input_size: int,
  num_devices: int,
  max_batch_shape: int,
  share: Sequence[str],
) -> list[str]:
  """The names of a resumable checkpoint's batch, or :class:`Unusable` (see the module docstring)."""
  if not isinstance(meta, dict) or meta.get('digest') != _digest(meta):
    raise Unusable('its metadata is not in the current format or does not match its digest')
  names, shape = meta.get('names'), meta.get('batch_shape')
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
  missing = set(names) - set(share)
  if missing:
    raise Unusable(
      f"{len(missing)} of its images are not in this process's share of the current inputs (the input list or "
      'the process count changed)'
    )
  return list(names)


def check_slots(
  meta: Any, fingerprint: str, input_size: int, batch_shape: int, share: Sequence[str]
) -> list[str]:
  """The slot names (``''`` = empty) of a resumable refill checkpoint (``refill.py``), or :class:`Unusable`:
  the same checks as :func:`check_meta`, with one name per row of the current batch shape."""
  if not isinstance(meta, dict) or meta.get('digest') != _digest(meta):
    raise Unusable('its metadata is not in the current format or does not match its digest')
  names = meta.get('names')
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
  missing = set(held) - set(share)
  if missing:
    raise Unusable(
      f"{len(missing)} of its images are not in this process's share of the current inputs (the input list or "
      'the process count changed)'
    )
  return list(names)


class BatchCheckpoint:
  """orbax CheckpointManager of one process's current batch (``OUT/.checkpoints/p<i>``)."""

  def __init__(self, root: epath.Path, process_index: int, process_count: int):
    self.dir = root / f'p{process_index}'
    self.process = (process_index, process_count)
    self._mngr: Optional[ocp.CheckpointManager] = None

  def _manager(self) -> ocp.CheckpointManager:
    if self._mngr is None:
      self._mngr = checkpoints.checkpoint_manager(
        self.dir, max_to_keep=1, item_names=('state', 'meta'), process=self.process
      )
    return self._mngr

  def latest(self) -> Optional[tuple[int, dict]]:
    """(step, meta) of the saved batch, or None."""
    if not self.dir.exists():
      return None
    try:
      step = self._manager().latest_step()
      if step is None:
        return None
      meta = self._manager().restore(step, args=checkpoints.restore_args(json=['meta']))['meta']
      return step, dict(meta)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('ignoring unreadable batch checkpoint in %s (%s: %s)', self.dir, type(e).__name__, e)
      self.discard()
      return None

  def save(self, step: int, state: Any, meta: dict) -> None:
    self._manager().save(
      step, args=checkpoints.save_args(trees={'state': mesh.to_host(state)}, json={'meta': meta}), force=True
    )
    self._manager().wait_until_finished()

  def restore(self, step: int, like: Any, uniform_step: bool = True) -> Any:
    """The saved state at ``step`` in ``like``'s structure; raises :class:`Unusable` on any failure.

    ``uniform_step``: every row at ``step`` (a batch); else (refill slots, rows at their own steps) every
    row's step within ``[0, optim.iterations]`` (the loss history's length)."""
    try:
      state = self._manager().restore(
        step, args=checkpoints.restore_args(trees={'state': mesh.to_host(like)})
      )['state']
    except Exception as e:  # pylint: disable=broad-except
      raise Unusable(f'its state cannot be restored ({type(e).__name__}: {str(e)[:300]})') from None
    steps = getattr(state, 'step', None)
    if steps is None:
      raise Unusable('its state has no step')
    if uniform_step and not np.all(np.asarray(steps) == step):
      raise Unusable(f'its state is not at step {step}')
    if not uniform_step and not np.all(
      (np.asarray(steps) >= 0) & (np.asarray(steps) <= state.loss_history.shape[-1])
    ):
      raise Unusable('its rows are not at steps inside the run')
    return state

  def discard(self) -> None:
    self.close()
    files.remove_tree(self.dir)

  def close(self) -> None:
    if self._mngr is not None:
      self._mngr.close()
      self._mngr = None
