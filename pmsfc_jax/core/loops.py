"""Iteration loops: one ``lax.scan`` per call on accelerators, one jitted step per call on XLA:CPU.

On XLA:CPU (jax 0.10) convolutions inside a ``while`` / ``scan`` body lose the fast runtime path and run
~3.5x slower (measured here: a 64x64 PGGAN inversion step 0.92 s alone vs 3.0 s per step in a scan;
the training step ~50x; upstream jax-ml/jax#12868). So the drivers (``inversion.run_steps``,
``self_expression.discover_features``) dispatch ``steps_per_call`` steps per jitted call: on CPU one step
(the Python loop costs nothing measurable next to a conv step, and dispatch is asynchronous), elsewhere the
whole chunk in one ``lax.scan``. Results are identical either way (tested).
"""

from __future__ import annotations

from typing import Any, Callable

import jax


def steps_per_call(requested: int | None, num_steps: int, platform: str | None = None) -> int:
  """``requested`` steps per jitted call (0 / None: 1 on CPU, all ``num_steps`` elsewhere).

  ``platform``: the backend the steps run on (default: jax's default backend; ``launch.plan`` passes
  ``'tpu'`` while compiling for a TPU topology on a CPU host).
  """
  if requested:
    return max(1, min(int(requested), num_steps))
  return 1 if (platform or jax.default_backend()) == 'cpu' else max(1, num_steps)


def scan_steps(body: Callable[[Any, None], tuple[Any, Any]], carry: Any, num_steps: int) -> tuple[Any, Any]:
  """``lax.scan(body, carry, None, length=num_steps)``, without a loop when ``num_steps == 1``."""
  if num_steps == 1:
    carry, y = body(carry, None)
    return carry, jax.tree.map(lambda a: a[None], y)
  return jax.lax.scan(body, carry, None, length=num_steps)
