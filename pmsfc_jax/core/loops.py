"""Iteration loops: one ``lax.scan`` per call on accelerators, one jitted step per call on XLA:CPU.

On XLA:CPU (jax 0.10) convolutions inside a ``while`` / ``scan`` body lose the fast runtime path and run
~3.5x slower (measured here: a 64x64 PGGAN inversion step 0.92 s alone vs 3.0 s per step in a scan;
the training step ~50x; upstream jax-ml/jax#12868). So the drivers (``inversion.run_steps``,
``self_expression.discover_features``) dispatch ``steps_per_call`` steps per jitted call: on CPU one step
(the Python loop costs nothing measurable next to a conv step, and dispatch is asynchronous), elsewhere the
whole chunk in one ``lax.scan``. Results are identical either way (tested).

Time bound (:class:`CallSizer`). A job checks its preemption notice between jitted calls, so one call must
not last long: with ``steps_per_call=0`` (auto) on an accelerator and ``max_call_seconds > 0``, the first
two calls run one step each (the first compiles; the second is timed), then calls run
``2**floor(log2(max_call_seconds / step_seconds))`` steps (timed once more at that length; halved while a
call exceeds the bound). Call lengths are powers of two, so at most ``log2(cap) + 1`` lengths compile.
An explicit ``steps_per_call`` is used as given (not time-bounded). The first call of each new length
includes its compilation, which no bound covers. :class:`InFlight` keeps the host at most one call
ahead of the device, so a notice waits for two calls at most. Processes that run one program in lockstep
(the batch job on a global mesh) must run calls of the same length: their sizer's ``agree`` turns each
measured time into the one every process uses (the slowest host's).
"""

from __future__ import annotations

import collections
import math
import time
from typing import Any, Callable, Optional

import jax


def steps_per_call(requested: int | None, num_steps: int, platform: str | None = None) -> int:
  """``requested`` steps per jitted call (0 / None: 1 on CPU, all ``num_steps`` elsewhere).

  ``platform``: the backend the steps run on (default: jax's default backend; ``launch.plan`` passes
  ``'tpu'`` while compiling for a TPU topology on a CPU host).
  """
  if requested:
    return max(1, min(int(requested), num_steps))
  return 1 if (platform or jax.default_backend()) == 'cpu' else max(1, num_steps)


def _pow2_floor(x: float) -> int:
  return 1 << max(0, int(math.floor(math.log2(x)))) if x >= 1 else 1


class CallSizer:
  """Steps per jitted call: ``requested`` (> 0: as given), or auto, time-bounded (module docstring).

  Use: ``n = sizer.steps(remaining)``; run the call; if ``sizer.measuring`` block on its output and call
  ``sizer.observe(n, seconds)``. One sizer per job keeps the calibration across chunks and batches.
  """

  def __init__(
    self,
    requested: int = 0,
    max_seconds: float = 0.0,
    backend: Optional[str] = None,
    agree: Optional[Callable[[float], float]] = None,
  ):
    self.requested = int(requested or 0)
    self.agree = agree  # measured seconds -> the seconds every process uses (module docstring)
    self.max_seconds = float(max_seconds or 0.0)
    self.backend = backend or jax.default_backend()
    self.auto_bounded = not self.requested and self.max_seconds > 0 and self.backend != 'cpu'
    self.cap: Optional[int] = None  # steps per call once calibrated
    self.verified = not self.auto_bounded
    self._seen: set[int] = set()

  @property
  def measuring(self) -> bool:
    """Whether the next call must be timed (blocking on its result)."""
    return not self.verified

  def steps(self, remaining: int) -> int:
    """Steps of the next call (``remaining`` > 0)."""
    if not self.auto_bounded:
      return steps_per_call(self.requested, remaining, self.backend)
    return _pow2_floor(min(self.cap or 1, remaining))

  def observe(self, num_steps: int, seconds: float) -> None:
    """The wall time of a call of ``num_steps`` steps (the first call of a length is compilation)."""
    if self.agree is not None:
      seconds = self.agree(seconds)
    if num_steps not in self._seen:
      self._seen.add(num_steps)
      return
    fit = _pow2_floor(self.max_seconds * num_steps / max(seconds, 1e-9))
    if self.cap is None:
      self.cap = fit
    elif seconds > self.max_seconds:
      self.cap = max(1, min(self.cap // 2, fit))
    elif num_steps != self.cap:
      return
    else:
      self.verified = True
    self.verified = self.verified or self.cap == 1


class InFlight:
  """Keeps the host at most ``depth`` jitted calls ahead of the device.

  Dispatch is asynchronous: left alone, the host queues call after call, and a preemption notice seen by
  the host would wait for every queued call to run. ``add(leaf)`` after each call records a copy of one
  (small) output leaf (a fresh buffer: the call's outputs may be donated to the next call) and blocks on
  the copies of all but the last ``depth`` calls; so the work behind a notice is at most ``depth + 1``
  calls, and the device still has the next call queued while the host dispatches.
  """

  def __init__(self, depth: int = 1):
    self.depth = depth
    self._marks: collections.deque = collections.deque()

  def add(self, leaf: Any) -> None:
    self._marks.append(jax.numpy.copy(leaf))
    while len(self._marks) > self.depth:
      jax.block_until_ready(self._marks.popleft())


def timed_call(sizer: CallSizer, num_steps: int, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
  """``fn(*args, **kwargs)`` (one jitted call of ``num_steps`` steps), timed for ``sizer`` while it
  calibrates (then it blocks on the result)."""
  if not sizer.measuring:
    return fn(*args, **kwargs)
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args, **kwargs))
  sizer.observe(num_steps, time.perf_counter() - t0)
  return out


def scan_steps(body: Callable[[Any, None], tuple[Any, Any]], carry: Any, num_steps: int) -> tuple[Any, Any]:
  """``lax.scan(body, carry, None, length=num_steps)``, without a loop when ``num_steps == 1``."""
  if num_steps == 1:
    carry, y = body(carry, None)
    return carry, jax.tree.map(lambda a: a[None], y)
  return jax.lax.scan(body, carry, None, length=num_steps)
