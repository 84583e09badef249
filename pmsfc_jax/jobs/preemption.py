"""THE preemption helper of every loop (batch inversion, discovery, GAN training).

A scheduler preempts a job with SIGTERM (and, after a grace period, SIGKILL). Inside ``with
Preemption() as p:`` the signal only sets ``p.requested``; the loop checks it at a safe point (after a
chunk of steps), saves its state and stops, and the job exits with ``exit_codes.PREEMPTED`` (143) so
that rerunning the same command resumes. Handlers are installed from the main thread only (Python's
rule) and the previous ones are restored on exit.

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
    logging.warning('received signal %d: saving the state at the next safe point, then exiting', signum)
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
