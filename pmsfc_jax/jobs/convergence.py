"""Quality per step: an inversion's metrics recorded along ONE optimisation (issue 19).

:func:`record` runs ``init_state`` and then ``run_steps`` in segments that end at the requested steps,
and after each segment decodes the current codes (``finalize``) and evaluates them; the optimisation is
the same as one uninterrupted ``run_steps`` of the last step (``run_steps(n)`` then ``run_steps(m)`` ==
``run_steps(n + m)``), so the value at step k is what a job stopped at step k would deliver (tested
against separate runs). A schedule (``optim.schedule``) runs over ``optim.iterations``: the recorded
points of a cosine run of 1600 steps are not those of a cosine run of 400.

:func:`log_steps` gives the log-spaced grid of the sweep; :func:`steps_to_reach` reads a mean curve;
``bench/bench_convergence.py`` drives the sweep and ``plots.plot_convergence`` draws it.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from pmsfc_jax.core import inversion
from pmsfc_jax.core import loops
from pmsfc_jax.core import mesh
from pmsfc_jax.io import progress

# evaluate(result as host numpy) -> {metric: (B,) values}.
Evaluate = Callable[[Any], dict[str, np.ndarray]]


def log_steps(first: int, last: int, per_octave: int = 4) -> list[int]:
  """Steps ``first * 2**(i / per_octave)`` rounded, up to and including ``last`` (sorted, unique)."""
  if not 1 <= first <= last or per_octave < 1:
    raise ValueError(f'need 1 <= first <= last and per_octave >= 1, got {first}, {last}, {per_octave}')
  n = int(np.floor(per_octave * np.log2(last / first) + 1e-9))
  steps = {int(round(first * 2 ** (i / per_octave))) for i in range(n + 1)}
  return sorted(steps | {last})


def record(
  gen,
  percep,
  targets: np.ndarray,
  masks: Optional[np.ndarray],
  cfg,
  keys,
  at_steps: Sequence[int],
  evaluate: Evaluate,
  aux: Any = None,
  log_every_s: float = 60.0,
) -> dict:
  """One optimisation of ``max(at_steps)`` steps (= ``cfg.optim.iterations``), evaluated at ``at_steps``.

  Returns ``steps`` (sorted), ``metrics`` ({name: (len(steps), B)}), ``loss_history`` ((B, iterations):
  the objective before each update), ``final`` (the host ``InversionResult`` at the last step) and
  ``seconds`` (optimisation only; decoding and evaluation excluded).
  """
  cfg = inversion.parse(cfg)
  steps = sorted({int(s) for s in at_steps})
  if not steps or steps[0] < 1 or steps[-1] != cfg.optim.iterations:
    raise ValueError(
      f'at_steps must lie in [1, optim.iterations={cfg.optim.iterations}] and end there: {steps}'
    )
  state = inversion.init_state(gen, percep, targets, masks, cfg, keys, aux)
  sizer = loops.CallSizer(cfg.job.steps_per_call, cfg.job.max_call_seconds)
  values: dict[str, list[np.ndarray]] = {}
  seconds, done, result = 0.0, 0, None
  with progress.Progress(len(targets) * steps[-1], 'curve', 'images*steps', log_every_s) as report:
    for s in steps:
      t0 = time.perf_counter()
      state = inversion.run_steps(gen, percep, state, targets, masks, cfg, s - done, aux, sizer=sizer)
      state.step.block_until_ready()
      seconds += time.perf_counter() - t0
      report.update((s - done) * len(targets))
      done = s
      result = mesh.to_host(inversion.finalize(gen, state, targets, masks, cfg, aux))
      for name, v in evaluate(result).items():
        values.setdefault(name, []).append(np.asarray(v, np.float64))
  return {
    'steps': steps,
    'metrics': {k: np.stack(v) for k, v in values.items()},
    'loss_history': np.asarray(result.loss_history),
    'final': result,
    'seconds': seconds,
  }


def steps_to_reach(
  steps: Sequence[int], curve: Sequence[float], target: float, higher_is_better: bool = True
):
  """The first recorded step at which ``curve`` reaches ``target`` (None if it never does): an upper
  bound at the resolution of the step grid."""
  for s, v in zip(steps, curve):
    if (v >= target) if higher_is_better else (v <= target):
      return int(s)
  return None


def best_envelope(curves: dict[str, tuple[Sequence[int], Sequence[float]]]) -> tuple[list[int], list[float]]:
  """The best value any curve reached within s steps, for every recorded s: the max over curves at each
  step, then the running max over steps (a budget of s steps can stop at any earlier step)."""
  best: dict[int, float] = {}
  for steps, values in curves.values():
    for s, v in zip(steps, values):
      best[int(s)] = max(float(v), best.get(int(s), -np.inf))
  xs = sorted(best)
  return xs, np.maximum.accumulate([best[x] for x in xs]).tolist()
