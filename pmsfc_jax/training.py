"""GAN training of a PGGAN generator (the demo model of issue #7): pure train steps, losses, the loop.

Objective: the non-saturating logistic GAN loss (Goodfellow et al. 2014) with the R1 gradient penalty on
reals (Mescheder et al. 2018), applied lazily every ``r1_every`` steps with its weight multiplied by
``r1_every`` (StyleGAN2's lazy regularisation). Adam with betas (0, 0.99) for both networks (PGGAN /
StyleGAN settings for equalized-LR networks) and an exponential moving average of the generator weights
(NVIDIA's ``Gs``, the network one ships). Deviations from PGGAN's paper recipe, chosen for a small CPU
budget: no progressive growing (the full-resolution networks train from the start) and logistic + R1
instead of WGAN-GP + drift.

Everything the step consumes is in :class:`TrainState` (including the PRNG key); minibatches are drawn
from an in-memory uint8 dataset *inside* the jitted step, so a run is a pure function of (config, seed):
resuming from a checkpoint reproduces the uninterrupted run bit for bit on the same backend.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import signal
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from pmsfc_jax import checkpoints
from pmsfc_jax import data as data_lib
from pmsfc_jax import imageio
from pmsfc_jax.models import discriminator as disc
from pmsfc_jax.models import pggan

Array = jax.Array
PyTree = Any


@dataclasses.dataclass(frozen=True)
class GANHParams:
  """Optimisation hyper-parameters (static: part of the compiled step)."""
  batch_size: int = 32
  learning_rate: float = 2e-3
  beta1: float = 0.0
  beta2: float = 0.99
  adam_eps: float = 1e-8
  r1_gamma: float = 0.1
  r1_every: int = 16
  ema_half_life_kimg: float = 10.0   # EMA half-life in thousands of images (StyleGAN's ema_kimg)
  ema_rampup: float = 0.05           # half-life <= rampup * images seen so far (0 disables the ramp-up)
  flip: bool = True                  # random horizontal flips of the reals

  def __post_init__(self):
    if self.batch_size <= 0 or self.r1_every <= 0:
      raise ValueError(f'batch_size and r1_every must be positive, got {self.batch_size}, {self.r1_every}')


@flax.struct.dataclass
class TrainState:
  step: Array        # int32 scalar: optimisation steps done
  g_params: PyTree
  d_params: PyTree
  g_ema: PyTree      # EMA of g_params (Gs): the generator to ship
  g_opt: PyTree
  d_opt: PyTree
  rng: Array         # raw uint32 key data (serialisable)


def make_optimizer(hp: GANHParams) -> optax.GradientTransformation:
  return optax.adam(hp.learning_rate, b1=hp.beta1, b2=hp.beta2, eps=hp.adam_eps)


def create_train_state(g_cfg: pggan.GeneratorConfig, d_cfg: disc.DiscriminatorConfig, hp: GANHParams,
                       seed: int) -> TrainState:
  """Fresh networks (N(0,1) equalized-LR weights), Adam states, EMA = G, key from ``seed``."""
  kg, kd, krun = jax.random.split(jax.random.key(seed), 3)
  g_params = pggan.init_params(g_cfg, kg)
  d_params = disc.init_params(d_cfg, kd)
  tx = make_optimizer(hp)
  return TrainState(step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
                    g_ema=jax.tree.map(jnp.copy, g_params), g_opt=tx.init(g_params), d_opt=tx.init(d_params),
                    rng=jax.random.key_data(krun))


# ----------------------------------------------------------------------------------------------------
# Losses.


def d_logistic_loss(real_logits: Array, fake_logits: Array) -> Array:
  """-log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))), batch mean."""
  return jnp.mean(jax.nn.softplus(fake_logits)) + jnp.mean(jax.nn.softplus(-real_logits))


def g_nonsaturating_loss(fake_logits: Array) -> Array:
  """-log sigmoid(D(G(z))), batch mean."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


def r1_penalty(d_fn: Callable[[Array], Array], reals: Array) -> Array:
  """E_x ||grad_x D(x)||^2 over the real batch (R1, without the gamma / 2 factor)."""
  grads = jax.grad(lambda x: jnp.sum(d_fn(x)))(reals)
  return jnp.mean(jnp.sum(jnp.square(grads), axis=(1, 2, 3)))


def ema_beta(step: Array, hp: GANHParams) -> Array:
  """Per-step EMA decay for a half-life of ``ema_half_life_kimg`` thousand images (with ramp-up)."""
  half_life = jnp.asarray(hp.ema_half_life_kimg * 1000.0, jnp.float32)
  if hp.ema_rampup > 0:
    seen = (step.astype(jnp.float32) + 1.0) * hp.batch_size
    half_life = jnp.minimum(half_life, seen * hp.ema_rampup)
  return 0.5 ** (hp.batch_size / jnp.maximum(half_life, 1e-8))


def sample_reals(images: Array, key: Array, batch_size: int, flip: bool) -> Array:
  """A random minibatch (with replacement) of uint8 images -> float32 [-1, 1], optionally flipped."""
  k_idx, k_flip = jax.random.split(key)
  idx = jax.random.randint(k_idx, (batch_size,), 0, images.shape[0])
  x = images[idx].astype(jnp.float32) / 127.5 - 1.0
  if flip:
    do = jax.random.bernoulli(k_flip, 0.5, (batch_size, 1, 1, 1))
    x = jnp.where(do, x[:, :, ::-1, :], x)
  return x


# ----------------------------------------------------------------------------------------------------
# The train step.


def train_step(state: TrainState, images: Array, *, g_cfg: pggan.GeneratorConfig,
               d_cfg: disc.DiscriminatorConfig, hp: GANHParams, with_r1: bool
               ) -> tuple[TrainState, dict[str, Array]]:
  """One D step (logistic, + R1 if ``with_r1``) then one G step (non-saturating), then the EMA update.

  ``images``: the whole uint8 dataset (N, R, R, C), sampled with the state's key. Pure; jit it.
  ``with_r1`` is static; :func:`make_train_fn` schedules it on steps ``0 mod r1_every``.
  Metrics: ``d_loss``, ``g_loss``, ``d_real``/``d_fake`` (mean logits), ``r1`` (NaN on steps without R1).
  """
  tx = make_optimizer(hp)
  key = jax.random.wrap_key_data(state.rng)
  key, k_real, k_zd, k_zg = jax.random.split(key, 4)
  reals = sample_reals(images, k_real, hp.batch_size, hp.flip)
  gen = lambda p, z: pggan.generate(g_cfg, p, z)
  dis = lambda p, x: disc.discriminate(d_cfg, p, x)

  # Discriminator.
  z = jax.random.normal(k_zd, (hp.batch_size, g_cfg.z_dim))
  fakes = jax.lax.stop_gradient(gen(state.g_params, z))

  def d_loss_fn(d_params):
    real_logits, fake_logits = dis(d_params, reals), dis(d_params, fakes)
    loss = d_logistic_loss(real_logits, fake_logits)
    if with_r1:
      r1 = r1_penalty(functools.partial(dis, d_params), reals)
      total = loss + (0.5 * hp.r1_gamma * hp.r1_every) * r1
    else:
      r1 = jnp.full((), jnp.nan, jnp.float32)
      total = loss
    return total, (loss, r1, jnp.mean(real_logits), jnp.mean(fake_logits))

  (_, (d_loss, r1, d_real, d_fake)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_params)
  d_updates, d_opt = tx.update(d_grads, state.d_opt, state.d_params)
  d_params = optax.apply_updates(state.d_params, d_updates)

  # Generator, against the updated discriminator.
  zg = jax.random.normal(k_zg, (hp.batch_size, g_cfg.z_dim))

  def g_loss_fn(g_params):
    return g_nonsaturating_loss(dis(d_params, gen(g_params, zg)))

  g_loss, g_grads = jax.value_and_grad(g_loss_fn)(state.g_params)
  g_updates, g_opt = tx.update(g_grads, state.g_opt, state.g_params)
  g_params = optax.apply_updates(state.g_params, g_updates)

  beta = ema_beta(state.step, hp)
  g_ema = jax.tree.map(lambda e, p: p + beta * (e - p), state.g_ema, g_params)
  new_state = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params, g_ema=g_ema,
                            g_opt=g_opt, d_opt=d_opt, rng=jax.random.key_data(key))
  metrics = {'d_loss': d_loss, 'g_loss': g_loss, 'd_real': d_real, 'd_fake': d_fake,
             'r1': r1}
  return new_state, metrics


@functools.lru_cache(maxsize=8)
def _jitted_steps(g_cfg, d_cfg, hp) -> dict[bool, Callable]:
  """{with_r1: jitted train step}, cached so repeated / resumed runs in one process compile once."""
  return {r1: jax.jit(functools.partial(train_step, g_cfg=g_cfg, d_cfg=d_cfg, hp=hp, with_r1=r1),
                      donate_argnums=0) for r1 in (False, True)}


def make_train_fn(g_cfg: pggan.GeneratorConfig, d_cfg: disc.DiscriminatorConfig, hp: GANHParams,
                  num_steps: int) -> Callable[[TrainState, Array], tuple[TrainState, dict[str, Array]]]:
  """A function running ``num_steps`` train steps; metrics stacked (num_steps,).

  Two jitted steps (with / without R1, the state donated) are dispatched from Python: step ``s`` uses R1
  when ``s % r1_every == 0``. Deviation from the usual ``lax.scan`` over steps: on XLA:CPU (jax 0.10) the
  same step inside a ``scan`` / ``while`` body ran ~50x slower (62 s vs 1.0 s per step at 32x32, 64
  channels, batch 32: the convolutions in loop bodies lose the fast runtime path); dispatch is
  asynchronous, so the Python loop costs nothing measurable on an accelerator either.
  """
  if num_steps <= 0:
    raise ValueError(f'steps per call must be positive, got {num_steps}')
  steps = _jitted_steps(g_cfg, d_cfg, hp)

  def run(state, images):
    first = int(jax.device_get(state.step))
    metrics = []
    for s in range(first, first + num_steps):
      state, m = steps[s % hp.r1_every == 0](state, images)
      metrics.append(m)
    return state, jax.tree.map(lambda *v: jnp.stack(v), *metrics)

  return run


def d_loss_on_batch(d_cfg: disc.DiscriminatorConfig, d_params: PyTree, reals: Array, fakes: Array) -> Array:
  """The logistic D loss on a given batch (for evaluation / tests)."""
  return d_logistic_loss(disc.discriminate(d_cfg, d_params, reals), disc.discriminate(d_cfg, d_params, fakes))


# ----------------------------------------------------------------------------------------------------
# Checkpoints of the whole training state.


def checkpoint_manager(workdir: str | epath.Path, max_to_keep: int = 3) -> ocp.CheckpointManager:
  directory = epath.Path(workdir) / 'checkpoints'
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(directory.absolute() if not str(directory).startswith('gs://') else directory,
                               options=options)


def save_state(mngr: ocp.CheckpointManager, state: TrainState, info: dict | None = None) -> None:
  """Saves ``state`` (as a state dict) plus JSON ``info`` at step ``state.step`` (async; orbax-atomic)."""
  step = int(jax.device_get(state.step))
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
                                          info=ocp.args.JsonSave(info or {})), force=True)


def restore_state(mngr: ocp.CheckpointManager, template: TrainState, step: int | None = None
                  ) -> tuple[TrainState, dict]:
  """Restores the latest (or ``step``) checkpoint into ``template``'s structure -> (state, info)."""
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no training checkpoint in {mngr.directory}')
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, flax.serialization.to_state_dict(template))
  restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                        info=ocp.args.JsonRestore()))
  state = flax.serialization.from_state_dict(template, restored['state'])
  return state, dict(restored['info'] or {})


# ----------------------------------------------------------------------------------------------------
# The loop.


def configs_from(config: ml_collections.ConfigDict
                 ) -> tuple[pggan.GeneratorConfig, disc.DiscriminatorConfig, GANHParams]:
  """The (generator, discriminator, hyper-parameter) dataclasses described by a training config."""
  m = config.model
  g_cfg = pggan.GeneratorConfig(resolution=m.resolution, z_dim=m.z_dim, fmaps_base=m.fmaps_base,
                                fmaps_max=m.fmaps_max, fused_scale=False)
  d_cfg = disc.DiscriminatorConfig.for_generator(g_cfg, mbstd_group_size=m.mbstd_group_size)
  known = {f.name for f in dataclasses.fields(GANHParams)}
  unknown = set(config.optim.keys()) - known
  if unknown:
    raise ValueError(f'unknown config.optim keys: {sorted(unknown)} (known: {sorted(known)})')
  hp = GANHParams(**config.optim.to_dict())
  if hp.batch_size % min(d_cfg.mbstd_group_size, hp.batch_size):
    raise ValueError(f'config.optim.batch_size={hp.batch_size} must be divisible by '
                     f'config.model.mbstd_group_size={d_cfg.mbstd_group_size}')
  return g_cfg, d_cfg, hp


def _check_schedule(config: ml_collections.ConfigDict):
  k = config.steps_per_call
  for name in ('total_steps', 'log_every', 'sample_every', 'checkpoint_every'):
    v = config[name]
    if v <= 0 or v % k:
      raise ValueError(f'config.{name}={v} must be a positive multiple of config.steps_per_call={k}')


@functools.lru_cache(maxsize=4)
def _jit_generate(g_cfg: pggan.GeneratorConfig) -> Callable:
  return jax.jit(functools.partial(pggan.generate, g_cfg))


def sample_grid(g_cfg: pggan.GeneratorConfig, params: PyTree, z: Array, ncols: int = 8,
                upscale: int = 1) -> np.ndarray:
  """Float [-1, 1] grid image of G(z) (clipped; ``make_grid`` layout, pad 2), nearest-upscaled."""
  imgs = np.asarray(_jit_generate(g_cfg)(params, z))
  grid = imageio.make_grid(np.clip(imgs, -1, 1), ncols=ncols)
  return np.repeat(np.repeat(grid, upscale, axis=0), upscale, axis=1) if upscale > 1 else grid


def write_demo_samples(generator: pggan.Generator, path: str | epath.Path, seed: int = 0,
                       num_samples: int = 16, ncols: int = 8, upscale: int = 4) -> np.ndarray:
  """Writes the sample grid of ``generator`` for ``z = normal(key(seed), (num_samples, z_dim))``.

  The latents follow ``launch.generate``'s ``--seed`` semantics. Cell i (row-major) covers pixels
  ``[r * (R + 2) * upscale, ...)`` with R the resolution; upscaling replicates pixels (nearest).
  """
  z = jax.random.normal(jax.random.key(seed), (num_samples, generator.config.z_dim))
  grid = sample_grid(generator.config, generator.params, z, ncols=ncols, upscale=upscale)
  imageio.save_image(path, grid)
  return grid


def load_dataset(config: ml_collections.ConfigDict, workdir: epath.Path) -> np.ndarray:
  paths = data_lib.numbered_paths(config.data.folder, config.data.first, config.data.last)
  cache = (workdir / f'data_{config.model.resolution}.npy') if config.data.cache else None
  return data_lib.load_images(paths, config.model.resolution, cache=cache)


def train(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (or resumes) a PGGAN in ``workdir``: checkpoints/, samples/, metrics.jsonl, config.json.

  SIGTERM / SIGINT make it save a checkpoint at the next call boundary and return (resume later with the
  same command).
  """
  _check_schedule(config)
  workdir = epath.Path(workdir)
  is_main = jax.process_index() == 0
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
  g_cfg, d_cfg, hp = configs_from(config)

  t = time.time()
  images_np = load_dataset(config, workdir)
  logging.info('dataset: %d images %s from %s in %.1fs', images_np.shape[0], images_np.shape[1:],
               config.data.folder, time.time() - t)
  images = jax.device_put(images_np)

  state = create_train_state(g_cfg, d_cfg, hp, config.seed)
  mngr = checkpoint_manager(workdir, config.keep_checkpoints)
  info = {'wall_seconds': 0.0}
  if mngr.latest_step() is not None:
    state, info = restore_state(mngr, state)
    logging.info('resumed from step %d (%.0fs of training so far)', int(state.step), info['wall_seconds'])
  fixed_z = jax.random.normal(jax.random.key(config.sample_seed), (config.num_samples, g_cfg.z_dim))
  train_fn = make_train_fn(g_cfg, d_cfg, hp, config.steps_per_call)

  stop = {'flag': False}
  previous = {}

  def handler(signum, frame):
    del frame
    logging.warning('signal %d: saving a checkpoint at the next call boundary, then stopping', signum)
    stop['flag'] = True

  for sig in (signal.SIGTERM, signal.SIGINT):
    try:
      previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not in the main thread
      pass

  step = int(state.step)
  wall = float(info.get('wall_seconds', 0.0))
  window = []
  t_window = time.time()
  try:
    while step < config.total_steps and not stop['flag']:
      t0 = time.time()
      state, metrics = train_fn(state, images)
      metrics = jax.device_get(metrics)
      step += config.steps_per_call
      wall += time.time() - t0
      window.append(metrics)
      if step % config.log_every == 0 or step >= config.total_steps:
        elapsed = time.time() - t_window
        stacked = {k: np.concatenate([np.asarray(m[k]) for m in window]) for k in window[0]}
        row = {k: float(np.nanmean(v)) if np.isfinite(v).any() else None for k, v in stacked.items()}
        row.update(step=step, sec_per_step=elapsed / (len(window) * config.steps_per_call),
                   wall_seconds=wall, images_seen=step * hp.batch_size)
        if not all(np.isfinite(v).all() for k, v in stacked.items() if k != 'r1'):
          raise FloatingPointError(f'non-finite losses at step {step}: {row}')
        logging.info('step %d  d_loss %.4f  g_loss %.4f  d_real %.3f  d_fake %.3f  r1 %s  %.3fs/step  '
                     'ETA %.0f min', step, row['d_loss'], row['g_loss'], row['d_real'], row['d_fake'],
                     row['r1'], row['sec_per_step'],
                     (config.total_steps - step) * row['sec_per_step'] / 60)
        if is_main:
          with (workdir / 'metrics.jsonl').open('a') as f:
            f.write(json.dumps(row) + '\n')
        window, t_window = [], time.time()
      if step % config.sample_every == 0 and is_main:
        grid = sample_grid(g_cfg, state.g_ema, fixed_z)
        imageio.save_image(workdir / 'samples' / f'ema_{step:07d}.png', grid)
        imageio.save_image(workdir / 'samples' / 'latest.png', grid)
      if step % config.checkpoint_every == 0 or step >= config.total_steps or stop['flag']:
        save_state(mngr, state, {'wall_seconds': wall, 'images_seen': step * hp.batch_size})
  finally:
    mngr.wait_until_finished()
    mngr.close()
    for sig, h in previous.items():
      signal.signal(sig, h)
  return state


def export_generator(config: ml_collections.ConfigDict, workdir: str, output: str, force: bool = False,
                     step: int | None = None) -> epath.Path:
  """Writes the EMA generator (Gs) of ``workdir``'s latest checkpoint as a generator checkpoint."""
  g_cfg, d_cfg, hp = configs_from(config)
  template = jax.eval_shape(lambda: create_train_state(g_cfg, d_cfg, hp, 0))
  template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
  mngr = checkpoint_manager(workdir, config.keep_checkpoints)
  try:
    state, info = restore_state(mngr, template, step)
  finally:
    mngr.close()
  n = int(state.step)
  meta = {'trained_with': 'pmsfc_jax.training (launch/train_pggan.py)', 'network': 'EMA generator (Gs)',
          'steps': n, 'batch_size': hp.batch_size, 'images_seen': n * hp.batch_size,
          'wall_seconds': round(float(info.get('wall_seconds', 0.0)), 1),
          'data': f'CelebA aligned faces {config.data.first:06d}-{config.data.last:06d}.jpg (centre square '
                  f'crop, {g_cfg.resolution}x{g_cfg.resolution}, random flips); CelebA terms: non-commercial '
                  'research only',
          'objective': f'non-saturating logistic + lazy R1 (gamma {hp.r1_gamma}, every {hp.r1_every})',
          'optimizer': f'Adam lr {hp.learning_rate} betas ({hp.beta1}, {hp.beta2})',
          'ema_half_life_kimg': hp.ema_half_life_kimg,
          'discriminator': disc.DiscriminatorConfig.to_dict(d_cfg)}
  return checkpoints.save_generator(output, g_cfg, state.g_ema, meta=meta, force=force)
