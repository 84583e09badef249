"""What one run of the batch job holds: the typed config, the loaded models, the output folder's record
keepers (manifest, batch checkpoint), the device mesh, the processes and the counters."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Optional

import jax
import numpy as np
from etils import epath

from pmsfc_jax.core import config
from pmsfc_jax.core import loops
from pmsfc_jax.io import progress
from pmsfc_jax.jobs import multihost
from pmsfc_jax.jobs import preemption
from pmsfc_jax.jobs.invert import batch_state
from pmsfc_jax.jobs.invert import manifest


@dataclasses.dataclass
class Job:
  cfg: config.InvertConfig
  out: epath.Path
  gen: Any
  percep: Any
  masks: Optional[np.ndarray]  # (R, C) bool subspace masks (pmsfc) or None
  known: Optional[np.ndarray]  # (R, R, 1) known-pixel mask (inpaint) or None
  mesh: jax.sharding.Mesh  # this process's devices, or every process's (lockstep; core/mesh.py)
  batch_shape: int  # batch_size rounded up to a multiple of the mesh's device count
  input_size: int
  manifest: manifest.Manifest
  ckpt: batch_state.BatchCheckpoint
  fingerprint: str
  preempt: preemption.Preemption
  procs: multihost.Processes
  sizer: Optional[loops.CallSizer] = None  # steps per jitted call, calibrated once per job
  redo: set = dataclasses.field(default_factory=set)  # names recorded ok whose result files are missing
  report: Optional[progress.Progress] = None
  stats: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  alignments: dict = dataclasses.field(default_factory=dict)  # name -> alignment record (task.align=face)

  @property
  def process_index(self) -> int:
    return self.procs.index

  @property
  def process_count(self) -> int:
    return self.procs.count


# SIGTERM received: state saved, exit 143 to be resumed later (the batch job catches it to write its summary).
Preempted = preemption.Preempted
