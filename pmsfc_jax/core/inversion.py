"""GAN inversion by multi-code feature composition: PmSFC (Eq. 6-9) and the mGANprior baseline (Eq. 1-2).

Every image is optimised independently: the per-image objective (``objective.objective``, Eq. 9) and
optimizer update are ``vmap``ped over the batch, so an image's result does not depend on which other
images share its batch (up to float reassociation inside batched convolutions). ``run_steps`` runs a
chunk of the iteration loop (one ``lax.scan`` per jitted call, ``loops.py``) and can be called repeatedly
(``run_steps(n)`` then ``run_steps(m)`` == ``run_steps(n+m)``), so a job can checkpoint the
:class:`InversionState` between chunks. V(x) is computed once per ``run_steps`` call outside the
gradient (gradients flow only through the estimate).

API (used by the batch job, ``jobs/invert/``)::

    state = init_state(gen, percep, targets, masks, cfg, rngs, aux)
    state = run_steps(gen, percep, state, targets, masks, cfg, num_steps, aux)   # donates `state`
    result = finalize(gen, state, targets, masks, cfg, aux)
    result = invert(gen, percep, targets, masks, cfg, rng, aux)                  # all three

``cfg`` is a :class:`config.InvertConfig` (a ConfigDict or dict is parsed with ``config.parse``); it is
hashable (a jit static argument), so repeated calls with equal configs and shapes compile once. ``aux``
holds the inpainting known-pixel masks: an array (B,H,W,1) / (B,H,W) / (H,W,1) / (H,W) (1 = known) or a
dict ``{'known': ...}``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from pmsfc_jax.core import composition
from pmsfc_jax.core import config
from pmsfc_jax.core import degradations
from pmsfc_jax.core import early_stop
from pmsfc_jax.core import loops
from pmsfc_jax.core import objective
from pmsfc_jax.core import optimizers
from pmsfc_jax.models import pggan

Array = jax.Array
# Called after every jitted call of run_steps with (steps just run, the new state): a job's progress and
# preemption check; returning True stops run_steps after that call (the returned state's step says where).
StepCallback = Callable[[int, 'InversionState'], Optional[bool]]


def parse(cfg: config.InvertConfigLike) -> config.InvertConfig:
  """The typed config of ``cfg`` (an InvertConfig, or a ConfigDict / dict, old spellings allowed)."""
  return config.parse(config.InvertConfig, cfg)


@struct.dataclass
class InversionState:
  """Optimisation state of a batch of B images (every leaf has a leading B axis).

  codes: (B, R, K, z_dim) for pmsfc, (B, N, z_dim) for mganprior; weights: (B, R, K, C) (pre-tanh w) for
  pmsfc, (B, N, C) (alpha) for mganprior; opt_state: optax state of {'codes', 'weights'}; step: (B,) int32;
  rng: (B, 2) uint32 raw per-image key data (``jax.random.wrap_key_data``), kept for checkpoints;
  loss_history: (B, iterations) float32, entry t = loss before update t (NaN where not run yet).
  """

  codes: Array
  weights: Array
  opt_state: Any
  step: Array
  rng: Array
  loss_history: Array


@struct.dataclass
class InversionResult:
  """images: raw G2 output (B,H,W,3); delivered: the task result (see degradations.deliver);
  codes / weights as in :class:`InversionState`; loss_history (B, steps); step (B,)."""

  images: Array
  delivered: Array
  codes: Array
  weights: Array
  loss_history: Array
  step: Array


# ------------------------------------------------------------------------------------------------
# Input normalisation (eager, outside jit).


def _per_image_keys(rngs, batch: int) -> Array:
  """(B,) typed keys from (B,) typed keys, (B, 2) raw uint32, or one key (fold_in(key, index))."""
  r = rngs
  if isinstance(r, int):
    r = jax.random.key(r)
  r = jnp.asarray(r) if not isinstance(r, jax.Array) else r
  if not jnp.issubdtype(r.dtype, jax.dtypes.prng_key):
    r = jax.random.wrap_key_data(jnp.asarray(r, jnp.uint32))
  if r.ndim == 0:
    return jax.vmap(lambda i: jax.random.fold_in(r, i))(jnp.arange(batch))
  if r.shape != (batch,):
    raise ValueError(f'rngs must be one key or {batch} per-image keys, got key array of shape {r.shape}')
  return r


def known_masks(aux, cfg: config.InvertConfig, batch: int, size: int) -> Optional[Array]:
  """The inpainting known-pixel masks of ``aux`` as (B, H, W, 1) float32 (None for other tasks)."""
  if cfg.task.name != 'inpaint':
    return None
  known = aux.get('known', aux.get('known_mask')) if isinstance(aux, dict) else aux
  if known is None:
    raise ValueError(
      "task 'inpaint' needs aux = known-pixel masks (B, H, W, 1) (1 = known, 0 = hole); "
      'see io.masks.load_inpainting_mask'
    )
  k = jnp.asarray(known, jnp.float32)
  if k.ndim == 2:
    k = k[..., None]
  if k.ndim == 3 and k.shape[-1] != 1:
    k = k[..., None]
  if k.ndim == 3:
    k = jnp.broadcast_to(k[None], (batch,) + k.shape)
  if k.shape != (batch, size, size, 1):
    raise ValueError(
      f'inpainting known-pixel masks must have shape ({batch}, {size}, {size}, 1), got {tuple(k.shape)}'
    )
  return k


def input_size(gen: pggan.Generator, cfg: config.InvertConfig) -> int:
  """The side of the targets: the generator resolution, or resolution / factor for super-resolution."""
  res = gen.config.resolution
  if cfg.task.name != 'super_resolve':
    return res
  if res % cfg.task.factor:
    raise ValueError(f'config.task.factor={cfg.task.factor} does not divide the generator resolution {res}')
  return res // cfg.task.factor


def _check_targets(gen: pggan.Generator, targets, cfg: config.InvertConfig) -> Array:
  t = jnp.asarray(targets, jnp.float32)
  size = input_size(gen, cfg)
  if t.ndim != 4 or t.shape[1:] != (size, size, 3):
    what = (
      f'low-resolution ({gen.config.resolution} / factor {cfg.task.factor})'
      if cfg.task.name == 'super_resolve'
      else 'generator'
    )
    raise ValueError(
      f'targets must have shape (B, {size}, {size}, 3) (the {what} resolution, task '
      f'{cfg.task.name!r}), got {tuple(t.shape)}'
    )
  return t


def subspace_masks(gen: pggan.Generator, masks, cfg: config.InvertConfig) -> Optional[Array]:
  """Validated float32 subspace masks (R, C) for pmsfc; None for mganprior (which needs none)."""
  if cfg.method.name == 'mganprior':
    return None
  if masks is None:
    raise ValueError("method 'pmsfc' needs subspace masks (R, C); use method 'mganprior' without them")
  if isinstance(masks, jax.core.Tracer):
    return masks.astype(jnp.float32)
  channels = pggan.feature_shape(gen.config, cfg.model.layer)[-1]
  return jnp.asarray(composition.check_masks(masks, channels), jnp.float32)


# ------------------------------------------------------------------------------------------------
# Public API.


def init_state(
  gen: pggan.Generator,
  percep,  # unused (the initial state does not depend on V): the leading arguments of run_steps / invert
  targets: Array,
  masks: Optional[Array],
  cfg: config.InvertConfigLike,
  rngs: Array | np.ndarray | int,
  aux: Any = None,
) -> InversionState:
  """Initial codes (N(0,I) or zeros from each image's key), weights, optimizer state, empty history.

  ``rngs``: (B,) per-image keys (typed or raw (B, 2) uint32), or a single key which is split per image
  with ``fold_in(key, index_in_batch)`` (then results depend on the image's position in the batch).
  """
  del percep  # The initial state does not depend on V.
  cfg = parse(cfg)
  t = _check_targets(gen, targets, cfg)
  b = t.shape[0]
  m = subspace_masks(gen, masks, cfg)
  known_masks(aux, cfg, b, gen.config.resolution)  # Validate early.
  keys = _per_image_keys(rngs, b)
  return _init_jit(gen.config, keys, None if m is None else m.shape[0], cfg)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _init_jit(
  gcfg: pggan.GeneratorConfig, keys: Array, num_subspaces: Optional[int], cfg: config.InvertConfig
) -> InversionState:
  channels = pggan.feature_shape(gcfg, cfg.model.layer)[-1]
  k = cfg.method.num_codes
  if cfg.method.name == 'pmsfc':
    code_shape = (num_subspaces, k, gcfg.z_dim)
    w0 = composition.pmsfc_init_weights(num_subspaces, k, channels)
  else:
    code_shape = (k, gcfg.z_dim)
    w0 = composition.mganprior_init_weights(k, channels)

  def one(key):
    codes = composition.init_codes(jax.random.fold_in(key, 0), code_shape, cfg.method.init)
    params = {'codes': codes, 'weights': w0}
    return params, optimizers.make_optimizer(cfg).init(params)

  params, opt_state = jax.vmap(one)(keys)
  b = keys.shape[0]
  return InversionState(
    codes=params['codes'],
    weights=params['weights'],
    opt_state=opt_state,
    step=jnp.zeros((b,), jnp.int32),
    rng=jax.random.key_data(keys),
    loss_history=jnp.full((b, cfg.optim.iterations), jnp.nan, jnp.float32),
  )


def run_steps(
  gen: pggan.Generator,
  percep: Optional[objective.Perceptual],
  state: InversionState,
  targets: Array,
  masks: Optional[Array],
  cfg: config.InvertConfigLike,
  num_steps: int,
  aux: Any = None,
  callback: Optional[StepCallback] = None,
  sizer: Optional[loops.CallSizer] = None,
) -> InversionState:
  """``num_steps`` optimisation steps of every image. DONATES ``state``'s buffers.

  Dispatched ``job.steps_per_call`` steps per jitted call, auto-sized within ``job.max_call_seconds``
  (``loops.CallSizer``; pass a job's ``sizer`` to keep its calibration across calls); ``callback(n,
  state)`` runs after each call (asynchronously dispatched: block on ``state`` to wait for the work) and
  stops the loop early by returning True.
  """
  cfg = parse(cfg)
  t = _check_targets(gen, targets, cfg)
  m = subspace_masks(gen, masks, cfg)
  known = known_masks(aux, cfg, t.shape[0], gen.config.resolution)
  num_steps = int(num_steps)
  if num_steps < 0:
    raise ValueError(f'num_steps must be >= 0, got {num_steps}')
  if num_steps == 0:
    return state
  if objective.uses_perceptual(cfg) and percep is None:
    raise ValueError(
      'config.loss.perceptual_weight != 0 needs the perceptual network (percep); '
      'pass io.pretrained.load_perceptual(...) or set perceptual_weight=0'
    )
  percep = percep if objective.uses_perceptual(cfg) else None
  x, tfeat = _objective_jit(percep, t, known, cfg)
  sizer = sizer or loops.CallSizer(cfg.job.steps_per_call, cfg.job.max_call_seconds)
  done = 0
  while done < num_steps:
    n = sizer.steps(num_steps - done)
    state = loops.timed_call(
      sizer, n, _run_steps_jit, gen, percep, state, x, tfeat, masks=m, known=known, cfg=cfg, num_steps=n
    )
    done += n
    if callback is not None and callback(n, state):
      break
  return state


@functools.partial(jax.jit, static_argnums=(3,))
def _objective_jit(percep, targets: Array, known: Optional[Array], cfg: config.InvertConfig):
  """x of Eq. 9 and V(x), once per ``run_steps`` call (outside the gradient)."""
  x = objective.objective_target(targets, known, cfg.task.name)
  tfeat = None
  if objective.uses_perceptual(cfg):
    tfeat = jax.lax.stop_gradient(objective.perceptual_features(percep, x, objective.compute_dtype(cfg)))
  return x, tfeat


def run_steps_impl(
  gen, percep, state: InversionState, x, tfeat, masks, known, cfg: config.InvertConfig, num_steps: int
) -> InversionState:
  """The traced body of :func:`run_steps`: ``num_steps`` steps on the objective target ``x`` (with its
  features ``tfeat``), one ``lax.scan`` (no loop for a single step; see ``loops.py``)."""
  opt = optimizers.make_optimizer(cfg)

  def one(params, opt_state, step, hist, target, target_features, kn):
    loss, grads = jax.value_and_grad(objective.objective)(
      params, gen, percep, masks, target, cfg, target_features, kn
    )
    updates, new_opt_state = opt.update(grads, opt_state, params)
    new = (optax.apply_updates(params, updates), new_opt_state, hist.at[step].set(loss, mode='drop'))
    if not early_stop.enabled(cfg):
      return *new[:2], step + 1, new[2]
    # Early stop: a converged image (or one at the cap) is frozen here, per row (core/early_stop.py).
    on = early_stop.active(hist, step, cfg)
    params, opt_state, hist = early_stop.keep_where(on, new, (params, opt_state, hist))
    return params, opt_state, step + on.astype(step.dtype), hist

  vone = jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None if tfeat is None else 0, None if known is None else 0))

  def body(carry, _):
    params, opt_state, step, hist = carry
    return vone(params, opt_state, step, hist, x, tfeat, known), None

  carry = ({'codes': state.codes, 'weights': state.weights}, state.opt_state, state.step, state.loss_history)
  (params, opt_state, step, hist), _ = loops.scan_steps(body, carry, num_steps)
  return state.replace(
    codes=params['codes'], weights=params['weights'], opt_state=opt_state, step=step, loss_history=hist
  )


_run_steps_jit = jax.jit(run_steps_impl, static_argnames=('cfg', 'num_steps'), donate_argnums=(2,))
# The one jitted step function: run_steps calls it, and launch.plan / the batch job's auto batch size
# compile it ahead of time (jobs/plan.py): what the plan measures is what runs.
run_steps_jit = _run_steps_jit
objective_target_jit = _objective_jit  # x and V(x) for callers of run_steps_jit (jobs/invert/refill.py)


def finalize(
  gen: pggan.Generator,
  state: InversionState,
  targets: Array,
  masks: Optional[Array],
  cfg: config.InvertConfigLike,
  aux: Any = None,
) -> InversionResult:
  """Decode the current codes: raw images, the task's delivered images, codes, weights, history."""
  cfg = parse(cfg)
  t = _check_targets(gen, targets, cfg)
  m = subspace_masks(gen, masks, cfg)
  known = known_masks(aux, cfg, t.shape[0], gen.config.resolution)
  return _finalize_jit(gen, state, t, m, known, cfg)


@functools.partial(jax.jit, static_argnums=(5,))
def _finalize_jit(
  gen, state: InversionState, targets, masks, known, cfg: config.InvertConfig
) -> InversionResult:
  images = jax.vmap(lambda c, w: objective.estimate(gen, c, w, masks, cfg))(state.codes, state.weights)
  delivered = degradations.deliver(images, targets, cfg.task.name, known)
  return InversionResult(
    images=images,
    delivered=delivered,
    codes=state.codes,
    weights=state.weights,
    loss_history=state.loss_history,
    step=state.step,
  )


def invert(
  gen: pggan.Generator,
  percep: Optional[objective.Perceptual],
  targets: Array,
  masks: Optional[Array],
  cfg: config.InvertConfigLike,
  rng: Array | np.ndarray | int,
  aux: Any = None,
  callback: Optional[StepCallback] = None,
) -> InversionResult:
  """init_state + ``optim.iterations`` steps in ``job.chunk_size`` chunks + finalize (jittable pieces).

  Args:
    gen: the generator (``io.checkpoints.load_generator``).
    percep: V (``io.pretrained.load_perceptual(cfg.loss.perceptual)``), or None without perceptual term.
    targets: (B, h, w, 3) degraded inputs in [-1, 1] (``degradations.prepare_target``).
    masks: subspace masks (R, C) (pmsfc) or None (mganprior).
    cfg: an InvertConfig (``presets.invert('pmsfc')``) or a ConfigDict / dict.
    rng: (B,) per-image keys, raw (B, 2) key data, or one key (folded per batch index).
    aux: inpainting known-pixel masks. callback: progress, see :func:`run_steps` (its return value is
      ignored here: ``invert`` always runs every iteration).
  """
  cfg = parse(cfg)
  iterations = cfg.optim.iterations
  chunk = cfg.job.chunk_size or iterations
  state = init_state(gen, percep, targets, masks, cfg, rng, aux)
  sizer = loops.CallSizer(cfg.job.steps_per_call, cfg.job.max_call_seconds)
  progress = None if callback is None else lambda n, st: bool(callback(n, st)) and False  # never stops
  done = 0
  while done < iterations:
    n = min(chunk, iterations - done)
    state = run_steps(gen, percep, state, targets, masks, cfg, n, aux, progress, sizer)
    done += n
  return finalize(gen, state, targets, masks, cfg, aux)


def render(
  gen: pggan.Generator, codes: Array, weights: Array, masks: Optional[Array], cfg: config.InvertConfigLike
) -> Array:
  """Images (B,H,W,3) of a batch of codes/weights (e.g. loaded from a result .npz)."""
  cfg = parse(cfg)
  m = subspace_masks(gen, masks, cfg)
  return jax.jit(jax.vmap(lambda c, w: objective.estimate(gen, c, w, m, cfg)))(codes, weights)
