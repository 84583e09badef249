"""The optimiser of the inversion codes and weights, with its learning-rate schedule (``config.Optim``).

Adam is the paper's ("Experimental Setup": lr 1e-4, betas (0.9, 0.999)); plain SGD is mGANprior's
``GD`` (lr 1, no momentum). Both take ``optim.lr`` as a constant (the paper's and mGANprior's choice) or
as one of optax's schedules over ``optim.iterations`` (issue 19's sweep, ``bench/bench_convergence.py``):

* ``cosine``: ``optax.cosine_decay_schedule(lr, iterations)`` (lr at step 0, 0 at ``iterations``);
* ``warmup_cosine``: ``optax.warmup_cosine_decay_schedule(0, lr, warmup, iterations)`` with
  ``warmup = round(warmup_fraction * iterations)`` linear steps from 0 to lr, then cosine to 0.

The schedule's step count lives in the optimiser state (one per image: the state is ``vmap``ped), so a
resumed checkpoint continues the schedule where it stopped, and an image's schedule does not depend on
when it entered a batch.
"""

from __future__ import annotations

import optax

from pmsfc_jax.core import config


def learning_rate(o: config.Optim) -> float | optax.Schedule:
  """``o.lr`` (constant) or the optax schedule of ``o.schedule`` over ``o.iterations``."""
  if o.schedule == 'constant':
    return o.lr
  if o.schedule == 'cosine':
    return optax.cosine_decay_schedule(o.lr, decay_steps=o.iterations)
  warmup = int(round(o.warmup_fraction * o.iterations))
  return optax.warmup_cosine_decay_schedule(0.0, o.lr, warmup_steps=warmup, decay_steps=o.iterations)


def make_optimizer(cfg: config.InvertConfig) -> optax.GradientTransformation:
  """Adam (paper) or plain SGD (mGANprior's ``GD``, optionally with momentum) at :func:`learning_rate`."""
  o = cfg.optim
  lr = learning_rate(o)
  if o.optimizer == 'adam':
    return optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)
  return optax.sgd(lr, momentum=o.momentum or None)
