"""THE progress reporter of every long loop (inversion batches, discovery, GAN training, generation,
evaluation, the demo): how much is done, the rate and the ETA.

On a terminal it draws a ``tqdm`` bar; otherwise (jobs under a scheduler, tests, pipes) it writes an absl
log line at most every ``log_every_s`` seconds (and always at the end)::

    inversion 1200/6000 images*steps | 38.5 images*steps/s, ETA 0:02:04 | images 3/16 done (ok 3, failed 0)

Why not ``clu.periodic_actions.ReportProgress``: it reports through ``clu.metric_writers`` and would add
clu (and its TensorFlow-flavoured dependencies) for one line of text; absl logging is what every job
already writes, and tqdm is the bar users expect on a terminal.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Optional

import jax
import tqdm
from absl import logging


def fmt_duration(seconds: float) -> str:
  """``h:mm:ss`` (``?`` when unknown)."""
  if not math.isfinite(seconds):
    return '?'
  s = int(round(seconds))
  return f'{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}'


class Progress:
  """``update(n)`` after each piece of work; reports ``what done/total | rate unit/s, ETA | info``.

  ``done``: work finished before this run (a resumed job): counted in ``done``, not in the rate.
  ``bar``: draw a tqdm bar (default: when stderr is a terminal).
  """

  def __init__(
    self,
    total: int,
    what: str,
    unit: str = 'steps',
    log_every_s: float = 30.0,
    done: int = 0,
    bar: Optional[bool] = None,
  ):
    self.total, self.what, self.unit, self.log_every_s = int(total), what, unit, float(log_every_s)
    self.done = self._start = int(done)
    self._t0 = self._last = time.perf_counter()
    use_bar = sys.stderr.isatty() if bar is None else bar
    self._bar = (
      tqdm.tqdm(total=self.total, initial=self.done, desc=what, unit=unit, leave=False, dynamic_ncols=True)
      if use_bar
      else None
    )

  @property
  def rate(self) -> float:
    return (self.done - self._start) / max(time.perf_counter() - self._t0, 1e-9)

  def update(self, n: int = 1, info: str = '', wait_for: Any = None) -> None:
    """Counts ``n`` more units. ``wait_for``: arrays to block on before a report (asynchronous dispatch
    returns before the work is done)."""
    self.done += int(n)
    now = time.perf_counter()
    if not (now - self._last >= self.log_every_s or (self.done >= self.total and n > 0)):
      if self._bar is not None:
        self._bar.update(int(n))
      return
    if wait_for is not None:
      jax.block_until_ready(wait_for)
    self._last = now
    if self._bar is not None:
      self._bar.update(int(n))
      if info:
        self._bar.set_postfix_str(info, refresh=False)
      return
    rate = self.rate
    eta = (self.total - self.done) / rate if rate > 0 else float('inf')
    logging.info(
      '%s %d/%d %s| %.1f %s/s, ETA %s%s',
      self.what,
      self.done,
      self.total,
      '' if self.unit == 'steps' else f'{self.unit} ',
      rate,
      self.unit,
      fmt_duration(eta),
      f' | {info}' if info else '',
    )

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None

  def __enter__(self) -> 'Progress':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
