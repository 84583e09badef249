"""GAN inversion by multi-code feature composition: PmSFC (Eq. 6-9) and the mGANprior baseline (Eq. 1-2).

Every image is optimised independently: the per-image objective and optimizer update are ``vmap``ped over
the batch, so an image's result does not depend on which other images share its batch (up to float
reassociation inside batched convolutions). The iteration loop is a ``lax.scan``; ``run_steps`` runs a
chunk of it and can be called repeatedly (``run_steps(n)`` then ``run_steps(m)`` == ``run_steps(n+m)``),
so a job can checkpoint the :class:`InversionState` between chunks.

Objective of one image (Eq. 2 / 8 / 9), with the task's degradation P (``degradations.py``)::

    L = pixel_weight * mean((x - P(x_hat))^2) + perceptual_weight * 0.001 * mean|V(x) - V(P(x_hat))|

where x is the (already degraded) input target and ``x_hat = G2(compose(codes, weights))``. V(x) is
computed once per chunk outside the gradient (gradients flow only through the estimate). For inpainting
the pixel mean runs over known pixels only and both images are masked before V. For colorization the
target is passed through P as well (a no-op for gray inputs, since P is idempotent), so colour inputs are
accepted too.

API (used by the batch job, pmsfc_jax/pipeline.py)::

    state = init_state(gen, percep, targets, masks, config, rngs, aux)
    state = run_steps(gen, percep, state, targets, masks, config, num_steps, aux)   # donates `state`
    result = finalize(gen, state, targets, masks, config, aux)
    result = invert(gen, percep, targets, masks, config, rng, aux)                  # all three

``config`` is the ml_collections ConfigDict of ``launch/configs/invert.py``; it is turned into a hashable
:class:`Settings` (a jit static argument), so repeated calls with equal configs and shapes compile once.
``aux`` holds the inpainting known-pixel masks: an array (B,H,W,1) / (B,H,W) / (H,W,1) / (H,W) (1 = known)
or a dict ``{'known': ...}``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from pmsfc_jax import composition
from pmsfc_jax import degradations
from pmsfc_jax import loops
from pmsfc_jax import losses
from pmsfc_jax.models import pggan

Array = jax.Array


# ------------------------------------------------------------------------------------------------
# Settings.


@dataclasses.dataclass(frozen=True)
class Settings:
  """The static (hashable) part of an inversion config."""
  method: str = 'pmsfc'
  task: str = 'reconstruct'
  layer: int = 3
  num_codes: int = 5
  optimizer: str = 'adam'
  lr: float = 1e-4
  b1: float = 0.9
  b2: float = 0.999
  adam_eps: float = 1e-8
  momentum: float = 0.0
  iterations: int = 7000
  init: str = 'normal'
  weight_eps: float = composition.DEFAULT_WEIGHT_EPS
  pixel_weight: float = 1.0
  perceptual_weight: float = 1.0
  factor: int = 1
  downsample: str = 'bilinear'

  def __post_init__(self):
    if self.method not in ('pmsfc', 'mganprior'):
      raise ValueError(f"config.method must be 'pmsfc' or 'mganprior', got {self.method!r}")
    degradations.check_task(self.task)
    if self.optimizer not in ('adam', 'sgd'):
      raise ValueError(f"config.optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
    if self.init not in ('normal', 'zeros'):
      raise ValueError(f"config.init must be 'normal' or 'zeros', got {self.init!r}")
    if self.num_codes < 1:
      raise ValueError(f'config.num_codes must be >= 1, got {self.num_codes}')
    if self.iterations < 0:
      raise ValueError(f'config.iterations must be >= 0, got {self.iterations}')
    if self.task == 'super_resolve' and self.factor < 1:
      raise ValueError(f'config.factor must be >= 1, got {self.factor}')
    if self.downsample not in degradations.DOWNSAMPLE_METHODS:
      raise ValueError(f'config.downsample must be one of {degradations.DOWNSAMPLE_METHODS}, '
                       f'got {self.downsample!r}')


def settings_from_config(config: Any) -> Settings:
  """:class:`Settings` from a ConfigDict / mapping / Settings (missing keys take the defaults)."""
  if isinstance(config, Settings):
    return config
  get = config.get if hasattr(config, 'get') else (lambda k, d: getattr(config, k, d))
  kw = {}
  for f in dataclasses.fields(Settings):
    v = get(f.name, f.default)
    if v is None:
      v = f.default
    kw[f.name] = type(f.default)(v)
  return Settings(**kw)


def perceptual_config(config: Any) -> losses.PerceptualConfig:
  """The :class:`losses.PerceptualConfig` of ``config.perceptual`` (for ``losses.load_perceptual``)."""
  p = config.get('perceptual', None) if hasattr(config, 'get') else None
  if p is None:
    return losses.PerceptualConfig()
  resize = p.get('resize', 256)
  return losses.PerceptualConfig(layer=p.get('layer', 'relu3_3'),
                                 resize=None if resize in (None, 0) else int(resize),
                                 resize_method=p.get('resize_method', 'nearest'),
                                 feature_scale=float(p.get('feature_scale', 0.001)),
                                 feature_loss=p.get('feature_loss', 'l1'))


def make_optimizer(s: Settings) -> optax.GradientTransformation:
  """Adam (paper) or plain SGD (mGANprior's ``GD``, optionally with momentum)."""
  if s.optimizer == 'adam':
    return optax.adam(s.lr, b1=s.b1, b2=s.b2, eps=s.adam_eps)
  return optax.sgd(s.lr, momentum=s.momentum or None)


# ------------------------------------------------------------------------------------------------
# State and result.


@struct.dataclass
class InversionState:
  """Optimisation state of a batch of B images (every leaf has a leading B axis).

  codes: (B, R, K, z_dim) for pmsfc, (B, N, z_dim) for mganprior; weights: (B, R, K, C) (pre-tanh w) for
  pmsfc, (B, N, C) (alpha) for mganprior; opt_state: optax state of {'codes', 'weights'}; step: (B,) int32;
  rng: (B, 2) uint32 raw per-image key data (``jax.random.wrap_key_data``), kept for checkpoints;
  loss_history: (B, config.iterations) float32, entry t = loss before update t (NaN where not run yet).
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


def _known_mask(aux, s: Settings, batch: int, size: int) -> Optional[Array]:
  if s.task != 'inpaint':
    return None
  known = aux.get('known', aux.get('known_mask')) if isinstance(aux, dict) else aux
  if known is None:
    raise ValueError("task 'inpaint' needs aux = known-pixel masks (B, H, W, 1) (1 = known, 0 = hole); "
                     'see degradations.load_inpainting_mask')
  k = jnp.asarray(known, jnp.float32)
  if k.ndim == 2:
    k = k[..., None]
  if k.ndim == 3 and k.shape[-1] != 1:
    k = k[..., None]
  if k.ndim == 3:
    k = jnp.broadcast_to(k[None], (batch,) + k.shape)
  if k.shape != (batch, size, size, 1):
    raise ValueError(f'inpainting known-pixel masks must have shape ({batch}, {size}, {size}, 1), '
                     f'got {tuple(k.shape)}')
  return k


def _check_targets(gen: pggan.Generator, targets, s: Settings) -> Array:
  t = jnp.asarray(targets, jnp.float32)
  res = gen.config.resolution
  size = res // s.factor if s.task == 'super_resolve' else res
  if s.task == 'super_resolve' and res % s.factor:
    raise ValueError(f'config.factor={s.factor} does not divide the generator resolution {res}')
  if t.ndim != 4 or t.shape[1:] != (size, size, 3):
    what = f'low-resolution ({res} / factor {s.factor})' if s.task == 'super_resolve' else 'generator'
    raise ValueError(f'targets must have shape (B, {size}, {size}, 3) (the {what} resolution, task '
                     f'{s.task!r}), got {tuple(t.shape)}')
  return t


def _masks_array(gen: pggan.Generator, masks, s: Settings) -> Optional[Array]:
  if s.method == 'mganprior':
    return None
  if masks is None:
    raise ValueError("method 'pmsfc' needs subspace masks (R, C); use method 'mganprior' without them")
  channels = pggan.feature_shape(gen.config, s.layer)[-1]
  if isinstance(masks, jax.core.Tracer):
    return masks.astype(jnp.float32)
  return jnp.asarray(composition.check_masks(masks, channels))


# ------------------------------------------------------------------------------------------------
# Per-image objective.


def _objective_target(targets: Array, known: Optional[Array], s: Settings) -> Array:
  """x of Eq. 9 (P applied again where it is idempotent: gray for colorize, holes zeroed for inpaint)."""
  if s.task == 'colorize':
    return degradations.grayscale(targets)
  if s.task == 'inpaint':
    return degradations.apply_known_mask(targets, known)
  return targets


def _render(gen: pggan.Generator, codes: Array, weights: Array, masks: Optional[Array], s: Settings) -> Array:
  feats = composition.compose(gen, codes, weights, masks, s.layer, s.method, s.weight_eps)
  return composition.decode(gen, feats, s.layer)


def _image_loss(params, gen, percep, masks, target, target_features, known, s: Settings) -> Array:
  """Loss of ONE image (target (h,w,3), target_features (h',w',c) or None, known (H,W,1) or None)."""
  x_hat = _render(gen, params['codes'], params['weights'], masks, s)[None]
  k = None if known is None else known[None]
  est = degradations.degrade(x_hat, s.task, factor=s.factor, method=s.downsample, known=k)
  return losses.reconstruction_loss(
      percep, target[None], est,
      target_features=None if target_features is None else target_features[None],
      pixel_weight=s.pixel_weight, perceptual_weight=s.perceptual_weight,
      pixel_mask=k if s.task == 'inpaint' else None)[0]


def _uses_vgg(s: Settings) -> bool:
  return s.perceptual_weight != 0


# ------------------------------------------------------------------------------------------------
# Public API.


def init_state(gen: pggan.Generator, percep: Optional[losses.Perceptual], targets, masks, config,
               rngs, aux=None) -> InversionState:
  """Initial codes (N(0,I) or zeros from each image's key), weights, optimizer state, empty history.

  ``rngs``: (B,) per-image keys (typed or raw (B, 2) uint32), or a single key which is split per image
  with ``fold_in(key, index_in_batch)`` (then results depend on the image's position in the batch).
  """
  del percep  # The initial state does not depend on V.
  s = settings_from_config(config)
  t = _check_targets(gen, targets, s)
  b = t.shape[0]
  m = _masks_array(gen, masks, s)
  _known_mask(aux, s, b, gen.config.resolution)  # Validate early.
  keys = _per_image_keys(rngs, b)
  return _init_jit(gen.config, keys, None if m is None else m.shape[0], s)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _init_jit(gcfg: pggan.GeneratorConfig, keys: Array, num_subspaces: Optional[int],
              s: Settings) -> InversionState:
  channels = pggan.feature_shape(gcfg, s.layer)[-1]
  k = s.num_codes
  if s.method == 'pmsfc':
    code_shape = (num_subspaces, k, gcfg.z_dim)
    w0 = composition.pmsfc_init_weights(num_subspaces, k, channels)
  else:
    code_shape = (k, gcfg.z_dim)
    w0 = composition.mganprior_init_weights(k, channels)

  def one(key):
    codes = composition.init_codes(jax.random.fold_in(key, 0), code_shape, s.init)
    params = {'codes': codes, 'weights': w0}
    return params, make_optimizer(s).init(params)

  params, opt_state = jax.vmap(one)(keys)
  b = keys.shape[0]
  return InversionState(codes=params['codes'], weights=params['weights'], opt_state=opt_state,
                        step=jnp.zeros((b,), jnp.int32), rng=jax.random.key_data(keys),
                        loss_history=jnp.full((b, s.iterations), jnp.nan, jnp.float32))


def run_steps(gen: pggan.Generator, percep: Optional[losses.Perceptual], state: InversionState, targets,
              masks, config, num_steps: int, aux=None) -> InversionState:
  """``num_steps`` optimisation steps of every image (one ``lax.scan``). DONATES ``state``'s buffers."""
  s = settings_from_config(config)
  t = _check_targets(gen, targets, s)
  m = _masks_array(gen, masks, s)
  known = _known_mask(aux, s, t.shape[0], gen.config.resolution)
  num_steps = int(num_steps)
  if num_steps < 0:
    raise ValueError(f'num_steps must be >= 0, got {num_steps}')
  if num_steps == 0:
    return state
  if _uses_vgg(s) and percep is None:
    raise ValueError('config.perceptual_weight != 0 needs the perceptual network (percep); '
                     'pass losses.load_perceptual(...) or set perceptual_weight=0')
  percep = percep if _uses_vgg(s) else None
  x, tfeat = _objective_jit(percep, t, known, s)
  per_call = loops.steps_per_call(config.get('steps_per_call', 0) if hasattr(config, 'get') else 0,
                                  num_steps)
  done = 0
  while done < num_steps:
    n = min(per_call, num_steps - done)
    state = _run_steps_jit(gen, percep, state, x, tfeat, masks=m, known=known, s=s, num_steps=n)
    done += n
  return state


@functools.partial(jax.jit, static_argnums=(3,))
def _objective_jit(percep, targets: Array, known: Optional[Array], s: Settings):
  """x of Eq. 9 and V(x), once per ``run_steps`` call (outside the gradient)."""
  x = _objective_target(targets, known, s)
  tfeat = None
  if _uses_vgg(s):
    tfeat = jax.lax.stop_gradient(losses.perceptual_features(percep, x))
  return x, tfeat


def run_steps_impl(gen, percep, state: InversionState, x, tfeat, masks, known, s: Settings,
                   num_steps: int) -> InversionState:
  """The traced body of :func:`run_steps`: ``num_steps`` steps on the objective target ``x`` (with its
  features ``tfeat``), one ``lax.scan`` (no loop for a single step; see ``loops.py``)."""
  opt = make_optimizer(s)

  def one(params, opt_state, step, hist, target, target_features, kn):
    loss, grads = jax.value_and_grad(_image_loss)(params, gen, percep, masks, target, target_features, kn, s)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    hist = hist.at[step].set(loss, mode='drop')
    return params, opt_state, step + 1, hist

  vone = jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None if tfeat is None else 0, None if known is None else 0))

  def body(carry, _):
    params, opt_state, step, hist = carry
    return vone(params, opt_state, step, hist, x, tfeat, known), None

  carry = ({'codes': state.codes, 'weights': state.weights}, state.opt_state, state.step, state.loss_history)
  (params, opt_state, step, hist), _ = loops.scan_steps(body, carry, num_steps)
  return state.replace(codes=params['codes'], weights=params['weights'], opt_state=opt_state, step=step,
                       loss_history=hist)


_run_steps_jit = jax.jit(run_steps_impl, static_argnames=('s', 'num_steps'), donate_argnums=(2,))


def finalize(gen: pggan.Generator, state: InversionState, targets, masks, config,
             aux=None) -> InversionResult:
  """Decode the current codes: raw images, the task's delivered images, codes, weights, history."""
  s = settings_from_config(config)
  t = _check_targets(gen, targets, s)
  m = _masks_array(gen, masks, s)
  known = _known_mask(aux, s, t.shape[0], gen.config.resolution)
  return _finalize_jit(gen, state, t, m, known, s)


@functools.partial(jax.jit, static_argnums=(5,))
def _finalize_jit(gen, state: InversionState, targets, masks, known, s: Settings) -> InversionResult:
  images = jax.vmap(lambda c, w: _render(gen, c, w, masks, s))(state.codes, state.weights)
  delivered = degradations.deliver(images, targets, s.task, known)
  return InversionResult(images=images, delivered=delivered, codes=state.codes, weights=state.weights,
                         loss_history=state.loss_history, step=state.step)


def invert(gen: pggan.Generator, percep: Optional[losses.Perceptual], targets, masks, config, rng,
           aux=None) -> InversionResult:
  """init_state + ``config.iterations`` steps in ``config.chunk_size`` scan chunks + finalize."""
  s = settings_from_config(config)
  chunk = int(config.get('chunk_size', 500) if hasattr(config, 'get') else 500) or s.iterations
  state = init_state(gen, percep, targets, masks, config, rng, aux)
  done = 0
  while done < s.iterations:
    n = min(chunk, s.iterations - done)
    state = run_steps(gen, percep, state, targets, masks, config, n, aux)
    done += n
  return finalize(gen, state, targets, masks, config, aux)


def render(gen: pggan.Generator, codes: Array, weights: Array, masks, config) -> Array:
  """Images (B,H,W,3) of a batch of codes/weights (e.g. loaded from a result .npz)."""
  s = settings_from_config(config)
  m = _masks_array(gen, masks, s)
  return jax.jit(jax.vmap(lambda c, w: _render(gen, c, w, m, s)))(codes, weights)
