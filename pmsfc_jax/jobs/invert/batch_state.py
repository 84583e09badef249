"""The optimisation state of the batch in progress: an orbax checkpoint per process.

Every ``job.checkpoint_every`` steps the batch's ``InversionState`` (codes, weights, optimizer state,
step, per-image keys, loss history) is saved in ``OUT/.checkpoints/p<process>`` (process-local: no
cross-host barrier); on restart the interrupted batch continues from it (results equal an uninterrupted
run: ``run_steps`` chunks compose). It is discarded once the batch's results are recorded.
"""

from __future__ import annotations

from typing import Any, Optional

import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from pmsfc_jax.core import mesh
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import files

CHECKPOINTS = '.checkpoints'


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

  def restore(self, step: int, like: Any) -> Any:
    return self._manager().restore(step, args=checkpoints.restore_args(trees={'state': mesh.to_host(like)}))[
      'state'
    ]

  def discard(self) -> None:
    self.close()
    files.remove_tree(self.dir)

  def close(self) -> None:
    if self._mngr is not None:
      self._mngr.close()
      self._mngr = None
