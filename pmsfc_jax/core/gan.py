"""GAN training of a PGGAN generator (the demo model of issue #7): its config, losses and pure train steps.

Objective: the non-saturating logistic GAN loss (Goodfellow et al. 2014) with the R1 gradient penalty on
reals (Mescheder et al. 2018), applied lazily every ``r1_every`` steps with its weight multiplied by
``r1_every`` (StyleGAN2's lazy regularisation). Adam with betas (0, 0.99) for both networks (PGGAN /
StyleGAN settings for equalized-LR networks) and an exponential moving average of the generator weights
(NVIDIA's ``Gs``, the network one ships). Deviations from PGGAN's paper recipe, chosen for a small CPU
budget: no progressive growing (the full-resolution networks train from the start) and logistic + R1
instead of WGAN-GP + drift.

Everything the step consumes is in :class:`TrainState` (including the PRNG key); minibatches are drawn
from an in-memory uint8 dataset *inside* the jitted step, so a run is a pure function of (config, seed):
resuming from a checkpoint reproduces the uninterrupted run bit for bit on the same backend. The loop
with checkpoints, samples and logs is ``jobs/train_pggan.py``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, ClassVar

import flax
import jax
import jax.numpy as jnp
import optax

from pmsfc_jax.core import config
from pmsfc_jax.models import discriminator as disc
from pmsfc_jax.models import pggan

Array = jax.Array
PyTree = Any


@dataclasses.dataclass(frozen=True)
class Data:
  # Required: the aligned CelebA faces 000001.jpg ... (the img_align_celeba folder of the CelebA release;
  # non-commercial research terms); the demo model used 000001-009000 (009001- are held out).
  folder: str = ''
  first: int = 1
  last: int = 9000  # 009001-009500 are held out for evaluation
  cache: bool = True  # decoded uint8 array cached as WORKDIR/data_R.npy


@dataclasses.dataclass(frozen=True)
class GanModel:
  """The networks trained: the generator's architecture (D mirrors it) and D's minibatch-stddev group."""

  generator: pggan.GeneratorConfig = pggan.GeneratorConfig(resolution=32, fmaps_base=4096, fmaps_max=128)
  mbstd_group_size: int = 4


@dataclasses.dataclass(frozen=True)
class GanOptim:
  """GAN optimisation hyper-parameters (static: part of the compiled step)."""

  batch_size: int = 32
  lr: float = 2e-3
  b1: float = 0.0
  b2: float = 0.99
  eps: float = 1e-8
  r1_gamma: float = 0.1
  r1_every: int = 16
  ema_half_life_kimg: float = 10.0  # EMA half-life in thousands of images (StyleGAN's ema_kimg)
  ema_rampup: float = 0.05  # half-life <= rampup * images seen so far (0 disables the ramp-up)
  flip: bool = True  # random horizontal flips of the reals

  def __post_init__(self):
    config.check(
      self.batch_size > 0 and self.r1_every > 0,
      f'batch_size and r1_every must be positive, got {self.batch_size}, {self.r1_every}',
    )


@dataclasses.dataclass(frozen=True)
class TrainJob:
  total_steps: int = 50_000
  steps_per_call: int = 50  # train steps per call of the train function (one host sync)
  log_every: int = 100
  sample_every: int = 1000
  checkpoint_every: int = 1000
  keep_checkpoints: int = 3
  num_samples: int = 64  # fixed-z sample grid (EMA generator)
  sample_seed: int = 0

  def __post_init__(self):
    k = self.steps_per_call
    for name in ('total_steps', 'log_every', 'sample_every', 'checkpoint_every'):
      v = getattr(self, name)
      config.check(
        k > 0 and v > 0 and v % k == 0,
        f'config.job.{name}={v} must be a positive multiple of config.job.steps_per_call={k}',
      )


# The spellings of before (train_pggan's flat job keys, Adam's long names, the generator fields).
_TRAIN_LEGACY = {
  'optim.learning_rate': 'optim.lr',
  'optim.beta1': 'optim.b1',
  'optim.beta2': 'optim.b2',
  'optim.adam_eps': 'optim.eps',
  **{f.name: f'job.{f.name}' for f in dataclasses.fields(TrainJob)},
  **{f'model.{k}': f'model.generator.{k}' for k in ('resolution', 'z_dim', 'fmaps_base', 'fmaps_max')},
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """GAN training of the demo generator: data, networks, optimiser (results) and the loop (job)."""

  LEGACY: ClassVar[dict[str, Any]] = _TRAIN_LEGACY

  seed: int = 0  # network initialisation and the minibatch draws
  data: Data = Data()
  model: GanModel = GanModel()
  optim: GanOptim = GanOptim()
  job: TrainJob = TrainJob()

  def __post_init__(self):
    b = self.optim.batch_size
    config.check(
      b % min(self.model.mbstd_group_size, b) == 0,
      f'config.optim.batch_size={b} must be divisible by config.model.mbstd_group_size='
      f'{self.model.mbstd_group_size}',
    )


@flax.struct.dataclass
class TrainState:
  step: Array  # int32 scalar: optimisation steps done
  g_params: PyTree
  d_params: PyTree
  g_ema: PyTree  # EMA of g_params (Gs): the generator to ship
  g_opt: PyTree
  d_opt: PyTree
  rng: Array  # raw uint32 key data (serialisable)


def make_optimizer(hp: GanOptim) -> optax.GradientTransformation:
  return optax.adam(hp.lr, b1=hp.b1, b2=hp.b2, eps=hp.eps)


def create_train_state(
  g_cfg: pggan.GeneratorConfig, d_cfg: disc.DiscriminatorConfig, hp: GanOptim, seed: int
) -> TrainState:
  """Fresh networks (N(0,1) equalized-LR weights), Adam states, EMA = G, key from ``seed``."""
  kg, kd, krun = jax.random.split(jax.random.key(seed), 3)
  g_params = pggan.init_params(g_cfg, kg)
  d_params = disc.init_params(d_cfg, kd)
  tx = make_optimizer(hp)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    g_params=g_params,
    d_params=d_params,
    g_ema=jax.tree.map(jnp.copy, g_params),
    g_opt=tx.init(g_params),
    d_opt=tx.init(d_params),
    rng=jax.random.key_data(krun),
  )


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


def ema_beta(step: Array, hp: GanOptim) -> Array:
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


def train_step(
  state: TrainState,
  images: Array,
  *,
  g_cfg: pggan.GeneratorConfig,
  d_cfg: disc.DiscriminatorConfig,
  hp: GanOptim,
  with_r1: bool,
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
  new_state = state.replace(
    step=state.step + 1,
    g_params=g_params,
    d_params=d_params,
    g_ema=g_ema,
    g_opt=g_opt,
    d_opt=d_opt,
    rng=jax.random.key_data(key),
  )
  metrics = {'d_loss': d_loss, 'g_loss': g_loss, 'd_real': d_real, 'd_fake': d_fake, 'r1': r1}
  return new_state, metrics


@functools.lru_cache(maxsize=8)
def _jitted_steps(g_cfg, d_cfg, hp) -> dict[bool, Callable]:
  """{with_r1: jitted train step}, cached so repeated / resumed runs in one process compile once."""
  return {
    r1: jax.jit(functools.partial(train_step, g_cfg=g_cfg, d_cfg=d_cfg, hp=hp, with_r1=r1), donate_argnums=0)
    for r1 in (False, True)
  }


def make_train_fn(
  g_cfg: pggan.GeneratorConfig, d_cfg: disc.DiscriminatorConfig, hp: GanOptim, num_steps: int
) -> Callable[[TrainState, Array], tuple[TrainState, dict[str, Array]]]:
  """A function ``run(state, images, first_step=None)`` running ``num_steps`` train steps; metrics stacked
  (num_steps,). ``first_step``: ``state.step`` as the caller counts it (None: read from the device).

  Two jitted steps (with / without R1, the state donated) are dispatched from Python: step ``s`` uses R1
  when ``s % r1_every == 0``. Deviation from the usual ``lax.scan`` over steps: on XLA:CPU (jax 0.10) the
  same step inside a ``scan`` / ``while`` body ran ~50x slower (62 s vs 1.0 s per step at 32x32, 64
  channels, batch 32: the convolutions in loop bodies lose the fast runtime path); dispatch is
  asynchronous, so the Python loop costs nothing measurable on an accelerator either.
  """
  if num_steps <= 0:
    raise ValueError(f'steps per call must be positive, got {num_steps}')
  steps = _jitted_steps(g_cfg, d_cfg, hp)

  def run(state, images, first_step: int | None = None):
    # The caller's host-side step count (the training loop's) spares a device sync per call.
    first = int(jax.device_get(state.step)) if first_step is None else int(first_step)
    metrics = []
    for s in range(first, first + num_steps):
      state, m = steps[s % hp.r1_every == 0](state, images)
      metrics.append(m)
    return state, jax.tree.map(lambda *v: jnp.stack(v), *metrics)

  return run


def d_loss_on_batch(d_cfg: disc.DiscriminatorConfig, d_params: PyTree, reals: Array, fakes: Array) -> Array:
  """The logistic D loss on a given batch (for evaluation / tests)."""
  return d_logistic_loss(disc.discriminate(d_cfg, d_params, reals), disc.discriminate(d_cfg, d_params, fakes))


def networks(cfg: TrainConfig) -> tuple[pggan.GeneratorConfig, disc.DiscriminatorConfig]:
  """The generator and discriminator architectures of a training config."""
  g_cfg = cfg.model.generator
  return g_cfg, disc.DiscriminatorConfig.for_generator(g_cfg, mbstd_group_size=cfg.model.mbstd_group_size)
