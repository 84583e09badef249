"""THE preemption helper of every loop (batch inversion, discovery, GAN training).

A scheduler preempts a job with SIGTERM (and, after a grace period, SIGKILL; cloud TPUs and spot VMs
give about 30 s). Inside ``with Preemption() as p:`` the signal only sets ``p.requested``; the loop checks
it after every jitted call (calls are kept short: one step on CPU, at most ``max_call_seconds`` of steps
on accelerators, ``core/loops.CallSizer``), saves its state, and raises :class:`Preempted`, which exits
with ``exit_codes.PREEMPTED`` (143) so that rerunning the same command resumes. The contract of every job:
the notice is acted on within two calls (the host is kept one call ahead of the device,
``core/loops.InFlight``) plus one checkpoint save, whatever the chunk / checkpoint / logging cadence; a
batch whose steps are all done is finished and recorded, never thrown away.
Handlers are installed from the main thread only (Python's rule) and the previous ones are restored on
exit.

Loops call :meth:`Preemption.poll` at every point where they could stop (after every jitted call, between
batches); ``requested`` is the answer of the last poll (or of the signal, in the local mode).

Several processes in lockstep (``Preemption(sync=True)``: the batch job on a global mesh, ``core/mesh.py``).
A scheduler's SIGTERM may reach one host before the others, or only one; every process must still stop
after the SAME jitted call, or one would wait for ever for a program its peers never dispatch. So the
notice goes through JAX's coordination service, as in the JAX pod codebases: ``jax.distributed.initialize``
installs the service's own SIGTERM notifier, and :meth:`poll` asks
``multihost_utils.reached_preemption_sync_point(n)`` with ``n`` the number of polls so far (the same on
every process). After a notice on any host, the service takes the largest ``n`` any process has reached
plus one as the sync point, and every process's poll returns True there. No Python handler is installed
in this mode: ``signal.signal(SIGTERM, ...)`` after ``jax.distributed.initialize`` replaces JAX's notifier
and the sync point never fires (tried). The notice reaches the service in about a second, so the stop
comes a few calls after the signal, still well inside a cloud grace period; a notice that comes after a
job's last jitted call is not acted on (the job ends normally). Independent hosts (the ``host`` mesh),
discovery and training handle their own signal as above.
"""

from __future__ import annotations

import signal
import threading
from typing import Sequence

from absl import logging
from jax.experimental import multihost_utils

from pmsfc_jax.jobs import exit_codes


class Preempted(SystemExit):
  """A loop stopped on a preemption notice after saving its state: exits with status 143."""

  def __init__(self, message: str = 'preempted: state saved; rerun the same command to resume'):
    super().__init__(exit_codes.PREEMPTED)
    self.message = message

  def __str__(self) -> str:
    return self.message


class Preemption:
  """Context manager turning ``signals`` into a ``requested`` flag while active; ``sync=True``: the notice
  of JAX's coordination service instead, agreed by every process (module docstring)."""

  def __init__(self, signals: Sequence[signal.Signals] = (signal.SIGTERM,), sync: bool = False):
    self.signals = tuple(signals)
    self.sync = bool(sync)
    self._event = threading.Event()
    self._previous: dict = {}
    self._polls = 0

  @property
  def requested(self) -> bool:
    return self._event.is_set()

  def poll(self) -> bool:
    """Whether to stop now. Call it at the same points on every process when ``sync`` (then it is the
    coordination service's sync point); otherwise it is ``requested``."""
    if self.sync and not self._event.is_set():
      self._polls += 1
      if multihost_utils.reached_preemption_sync_point(self._polls):
        logging.warning(
          'preemption notice agreed by every process at sync point %d: saving, then exiting', self._polls
        )
        self._event.set()
    return self._event.is_set()

  def request(self) -> None:
    self._event.set()

  def _handler(self, signum, frame) -> None:
    del frame
    logging.warning('received signal %d: saving the state after the current call, then exiting', signum)
    self._event.set()

  def __enter__(self) -> 'Preemption':
    if not self.sync and threading.current_thread() is threading.main_thread():
      for sig in self.signals:
        self._previous[sig] = signal.signal(sig, self._handler)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()
