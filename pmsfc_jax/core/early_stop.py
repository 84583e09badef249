"""Early stop per image (issue 19): an image stops when its best loss so far stops improving.

The criterion, per image, before update ``s`` (``s`` updates done; ``loss_history[t]`` is the objective
before update ``t``): with ``best(n) = min(loss_history[:n])``, the image is *converged* when

    s > window  and  best(s - window) - best(s) <= tolerance * |best(s - window)|,

i.e. the best loss improved by less than the fraction ``tolerance`` over the last ``window`` steps
(``job.stop_window``, ``job.stop_tolerance``; 0 = off, the default). The best loss so far, not the
loss now: at Adam lr 0.03 the per-step loss is bumpy, and a test on the loss itself fires while the
loss still falls (measured: docs/convergence.md). An image also stops at the cap ``optim.iterations``.

A stopped image is frozen *inside* the jitted step (its codes, weights, optimiser state, step and
history stay as they are, ``jnp.where`` per row), so its result depends only on its own key and settings,
never on when the job notices (jitted-call boundaries), on its slot or on its batch-mates. The batch job
then writes it and refills its slot with the next image (``jobs/invert/refill.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pmsfc_jax.core import config


def enabled(cfg: config.InvertConfig) -> bool:
  """Whether the criterion is on (a static switch: off, the step is exactly the plain one)."""
  return cfg.job.stop_tolerance > 0


def converged(history: jax.Array, step: jax.Array, window: int, tolerance: float) -> jax.Array:
  """The criterion of one image (module docstring): ``history`` (iterations,), ``step`` () int."""
  idx = jnp.arange(history.shape[-1])
  best = lambda n: jnp.min(jnp.where(idx < n, history, jnp.inf))
  then, now = best(step - window), best(step)
  return (step > window) & (then - now <= tolerance * jnp.abs(then))


def active(history: jax.Array, step: jax.Array, cfg: config.InvertConfig) -> jax.Array:
  """Whether one image still takes steps: below the cap and, with the criterion on, not converged."""
  below_cap = step < cfg.optim.iterations
  if not enabled(cfg):
    return below_cap
  return below_cap & ~converged(history, step, cfg.job.stop_window, cfg.job.stop_tolerance)


def keep_where(on: jax.Array, new, old):
  """``new`` where ``on`` (a scalar bool of one image), else ``old``, leaf by leaf."""
  return jax.tree.map(lambda n, o: jnp.where(on, n, o), new, old)
