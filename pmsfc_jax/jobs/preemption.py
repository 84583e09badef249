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

Multi-host: the batch job's hosts are independent (each saves its own share), so each handles its own
signal. A loop that runs in lockstep across hosts (discovery, training) would need all hosts to stop at
the same step (``jax.experimental.multihost_utils.reached_preemption_sync_point``); they are run on one
host here.
"""

from __future__ import annotations

import signal
import threading
from typing import Sequence

from absl import logging

from pmsfc_jax.jobs import exit_codes


class Preempted(SystemExit):
  """A loop stopped on a preemption notice after saving its state: exits with status 143."""

  def __init__(self, message: str = 'preempted: state saved; rerun the same command to resume'):
    super().__init__(exit_codes.PREEMPTED)
    self.message = message

  def __str__(self) -> str:
    return self.message


class Preemption:
  """Context manager turning ``signals`` into a ``requested`` flag while active."""

  def __init__(self, signals: Sequence[signal.Signals] = (signal.SIGTERM,)):
    self.signals = tuple(signals)
    self._event = threading.Event()
    self._previous: dict = {}

  @property
  def requested(self) -> bool:
    return self._event.is_set()

  def request(self) -> None:
    self._event.set()

  def _handler(self, signum, frame) -> None:
    del frame
    logging.warning('received signal %d: saving the state after the current call, then exiting', signum)
    self._event.set()

  def __enter__(self) -> 'Preemption':
    if threading.current_thread() is threading.main_thread():
      for sig in self.signals:
        self._previous[sig] = signal.signal(sig, self._handler)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()
