"""Prior subspace discovery (paper: "Explore GAN Prior Subspaces", Eq. 3-5, Algorithm 1).

A self-expressive layer S (C x C, no bias, no activation) sits between G1 and G2 of the split at
``layer``. With F(z) the flattened G1 features (HW x C per sample, channels as columns)::

  L_recF = E_z ||F(z) - F(z) S||^2                      (Eq. 3)
  L_recD = E_z ||G2(G1(z)) - G2(T(F(z) S))||^2          (Eq. 4)
  min_S  L_recF + lambda L_recD + mu ||S||_1,  s.t. diag(S) = 0     (Eq. 5)

diag(S) = 0 is structural, not a penalty: the forward pass uses ``S * (1 - I)``, the gradient is masked
the same way and the stored S is re-masked after every update, so its diagonal is exactly 0 at all
times. S is then clustered (:mod:`pmsfc_jax.core.clustering`) into R subspaces (binary masks R x C).
This module is the pure math (one jitted, sharded chunk of steps and the in-memory loop);
``jobs/discover.py`` adds checkpoints, preemption, progress, clustering and the subspace folder.

The paper vs the official training script, and what is followed here. The official S-training script is
``discover_subspace.py`` (guanyuelee/PmSFC @ f26cbb46; called ``self_express_gan2.py`` until commit
f814667, lines 1-351 unchanged). Its loss (``discover_subspace.py:140-160``) is
``mean((F - F_rec)^2) + beta0 * mean((X - X_rec)^2) + beta1 * sparse`` with

===================  ==========================================  ===================================
setting              paper ("Experimental Setup", Eq. 5)         official defaults (argparse)
===================  ==========================================  ===================================
iterations           3000                                        10000 (``:321-322``)
lambda (L_recD)      10                                          ``beta0`` = 1.0 (``:344-345``)
mu (sparsity)        1                                           ``beta1`` = 1.0 (``:346-347``)
sparsity term        ``||S||_1``                                 ``'L2'``: ``mean(S_off^2)`` (``:320``,
                                                                 ``:151-154``; ``'L1'`` = ``mean|S_off|``)
optimiser            Adam lr 1e-4, betas (0.9, 0.999)            the same (``:316-319``, ``:124-125``)
batch                not given                                   4 fresh z ~ N(0, I) per step (``:142``)
===================  ==========================================  ===================================

Here the defaults follow the PAPER (``discovery_config.SelfExpression``: 3000 iterations, lambda = 10, mu = 1, an
L1 sparsity) and the official code where the paper is silent:

* batch of 4 fresh z ~ N(0, I) per iteration (``optim.batch_size``);
* S initialised to a constant 1e-4 (``optim.init_value``; ``discover_subspace.py:114``). The official
  diagonal keeps 1e-4 but is masked in the forward pass (``:145``); here it is stored as 0;
* every term is a ``torch.mean`` over all its elements (``optim.reduction='mean'``, the default; the L1
  mean runs over all C^2 entries, the masked diagonal included, as officially). The paper's norms are
  sums: ``reduction='sum'`` gives per-sample squared norms averaged over the batch for L_recF and
  L_recD, and the plain sum of |S| for the L1 term;
* its matrix is stored transposed (``F_rec = M F`` with channels as rows, M = S^T; ``:144-146``);
  :func:`pmsfc_jax.core.clustering.from_official_layout` converts.

To run the official defaults instead: ``optim.lam=1``, ``optim.iterations=10000`` (an L2 sparsity is
not offered). The official README command (``README.md:51-57``: 200 iterations, ``--sparse_type=L1``,
``--power=2.0``) does not run as published: the script's strict ``parse_args`` (``:348``) rejects its
``--init_type --cluster_numbers --subspace_dimension``. The released matrices are early snapshots of
such a run (``docs/discovery.md``: barely trained).

Data parallelism: the global batch is sharded over a 1-D ``('data',)`` mesh (``jax.make_mesh`` +
``NamedSharding``), S and the optimizer state are replicated, and XLA averages the gradients. The latent
of global batch index i at step t is drawn from ``fold_in(fold_in(rng, t), i)``, so a run does not depend
on the number of devices (1 CPU, 8 GPUs or a pod slice give the same S up to float summation order).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from pmsfc_jax.core import config
from pmsfc_jax.core import discovery_config
from pmsfc_jax.core import loops
from pmsfc_jax.core import mesh as mesh_lib
from pmsfc_jax.models import pggan

Array = jax.Array
HISTORY_KEYS = ('rec_f', 'rec_d', 'l1', 'total')
# Called after every chunk of ``job.log_every`` steps with (state, history, steps in the chunk); a True
# return stops the loop (preemption).
ChunkCallback = Callable[['DiscoveryState', dict, int], bool]


# ----------------------------------------------------------------------------------------------------
# Feature models: where F(z) comes from and how it is decoded.


@dataclasses.dataclass(frozen=True)
class GeneratorFeatures:
  """F = G1(z) at ``layer`` with z ~ N(0, I) per key, and decode = G2 (``aux`` is the params pytree)."""

  config: pggan.GeneratorConfig
  layer: int

  def features(self, params, keys: Array) -> Array:
    z = jax.vmap(lambda k: jax.random.normal(k, (self.config.z_dim,), jnp.float32))(keys)
    return pggan.g1(self.config, params, z, self.layer)

  def decode(self, params, features: Array) -> Array:
    return pggan.g2(self.config, params, features, self.layer)

  @property
  def num_channels(self) -> int:
    return pggan.feature_shape(self.config, self.layer)[-1]


class DiscoveryState(NamedTuple):
  """S (stored with an exactly-zero diagonal), the optax state, and the number of steps done."""

  S: Array
  opt_state: Any
  step: Array


def _optimizer(hp: discovery_config.SelfExpression) -> optax.GradientTransformation:
  return optax.adam(hp.lr, b1=hp.b1, b2=hp.b2, eps=hp.eps)


def _offdiag(c: int) -> Array:
  return 1.0 - jnp.eye(c, dtype=jnp.float32)


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """``mesh.make_mesh`` over ``devices``, by default ALL devices of all hosts: discovery is one
  data-parallel job (the batch job, by contrast, gives each host its own local mesh)."""
  return mesh_lib.make_mesh(devices=jax.devices() if devices is None else devices)


def init_state(
  num_channels: int, hp: discovery_config.SelfExpression, mesh: jax.sharding.Mesh | None = None
) -> DiscoveryState:
  """S = init_value off the diagonal, 0 on it (official init: a constant 1e-4), replicated on the mesh."""
  S = jnp.full((num_channels, num_channels), hp.init_value, jnp.float32) * _offdiag(num_channels)
  state = DiscoveryState(S, _optimizer(hp).init(S), jnp.zeros((), jnp.int32))
  if mesh is not None:
    state = jax.device_put(state, NamedSharding(mesh, P()))
  return state


def self_expressive_losses(
  S: Array,
  features: Array,
  hp: discovery_config.SelfExpression,
  decode: Optional[Callable[[Array], Array]] = None,
  images: Optional[Array] = None,
) -> tuple[Array, dict]:
  """Eq. 3-5 for one batch of features (B, H, W, C) -> (total, {rec_f, rec_d, l1, total}).

  ``S`` is masked with (1 - I) here, so the diagonal never takes part. ``decode`` is G2 (None or
  lam == 0 drops L_recD); ``images`` = G2(F) may be passed in when already computed.
  """
  b, c = features.shape[0], features.shape[-1]
  Sm = S * _offdiag(c)
  flat = features.reshape(b, -1, c)  # F(z): (B, HW, C)
  rec = jnp.einsum('bpc,cd->bpd', flat, Sm)  # F(z) S
  if hp.reduction == 'mean':
    reduce_sq = lambda x: jnp.mean(jnp.square(x))
    l1 = jnp.mean(jnp.abs(Sm))
  else:
    reduce_sq = lambda x: jnp.sum(jnp.square(x)) / b
    l1 = jnp.sum(jnp.abs(Sm))
  rec_f = reduce_sq(flat - rec)
  if decode is not None and hp.lam != 0:
    if images is None:
      images = decode(features)
    rec_d = reduce_sq(jax.lax.stop_gradient(images) - decode(rec.reshape(features.shape)))  # T(F S)
  else:
    rec_d = jnp.zeros((), jnp.float32)
  total = rec_f + hp.lam * rec_d + hp.mu * l1
  return total, {'rec_f': rec_f, 'rec_d': rec_d, 'l1': l1, 'total': total}


def _batch_keys(base_key: Array, step: Array, batch_size: int) -> Array:
  """Keys of global batch indices 0..B-1 at ``step``: independent of the device count."""
  step_key = jax.random.fold_in(base_key, step)
  return jax.vmap(lambda i: jax.random.fold_in(step_key, i))(jnp.arange(batch_size, dtype=jnp.uint32))


def _train_chunk_impl(
  model,
  aux,
  state: DiscoveryState,
  base_key: Array,
  *,
  hp: discovery_config.SelfExpression,
  num_steps: int,
  mesh: jax.sharding.Mesh | None,
) -> tuple[DiscoveryState, Array]:
  """``num_steps`` Adam steps of Eq. 5 in one lax.scan (no loop for one step: on XLA:CPU convs in loop
  bodies are slow, see loops.py); returns the state and metrics (num_steps, 4)."""
  tx = _optimizer(hp)
  c = state.S.shape[0]
  mask = _offdiag(c)
  decode = None if not hasattr(model, 'decode') else functools.partial(model.decode, aux)

  def body(st: DiscoveryState, _):
    keys = _batch_keys(base_key, st.step, hp.batch_size)
    if mesh is not None:
      keys = jax.lax.with_sharding_constraint(keys, NamedSharding(mesh, P('data')))
    feats = jax.lax.stop_gradient(model.features(aux, keys))
    if mesh is not None:
      feats = jax.lax.with_sharding_constraint(feats, NamedSharding(mesh, P('data')))
    (_, terms), grad = jax.value_and_grad(self_expressive_losses, has_aux=True)(st.S, feats, hp, decode)
    grad = grad * mask
    updates, opt_state = tx.update(grad, st.opt_state, st.S)
    S = optax.apply_updates(st.S, updates) * mask  # diag stays exactly 0
    return DiscoveryState(S, opt_state, st.step + 1), jnp.stack([terms[k] for k in HISTORY_KEYS])

  return loops.scan_steps(body, state, num_steps)


train_chunk = jax.jit(
  _train_chunk_impl, static_argnames=('model', 'hp', 'num_steps', 'mesh'), donate_argnames=('state',)
)
train_chunk.__doc__ = """Jitted :func:`_train_chunk_impl` (state donated)."""


def check_mesh(hp: discovery_config.SelfExpression, mesh: jax.sharding.Mesh):
  if hp.batch_size % mesh.size:
    raise ValueError(
      f'config.batch_size={hp.batch_size} must be a multiple of the number of devices '
      f'in the mesh ({mesh.size})'
    )


def parse(cfg: discovery_config.DiscoverConfigLike) -> discovery_config.DiscoverConfig:
  """The typed config of ``cfg`` (a DiscoverConfig, or a ConfigDict / dict, old spellings allowed)."""
  return config.parse(discovery_config.DiscoverConfig, cfg)


def discover_features(
  model: Any,
  aux: Any,
  cfg: discovery_config.DiscoverConfigLike,
  rng: Array,
  mesh: jax.sharding.Mesh | None = None,
  state: DiscoveryState | None = None,
  history: dict | None = None,
  on_chunk: ChunkCallback | None = None,
  stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, dict]:
  """Runs Algorithm 1 for any feature model (``model.features(aux, keys) -> (B,H,W,C)``, optional
  ``model.decode(aux, F)``). Chunks of ``job.log_every`` steps, dispatched ``job.steps_per_call`` steps
  per jitted call (0 = auto: 1 on CPU, the whole chunk in one lax.scan elsewhere; loops.py).

  ``state``/``history`` resume a run; ``on_chunk(state, history, steps)`` is called after every chunk
  and may return True to stop early (preemption). Returns (S (C, C) float32 numpy, history dict of
  per-step numpy arrays ``rec_f, rec_d, l1, total``). ``stop()`` is checked after every jitted call (calls
  auto-sized within ``job.max_call_seconds``, ``loops.CallSizer``): when True the chunk ends there (its
  ``on_chunk`` gets the steps run so far), so a preemption notice waits for one call at most.
  """
  cfg = parse(cfg)
  hp = cfg.optim
  mesh = make_mesh() if mesh is None else mesh
  check_mesh(hp, mesh)
  if state is None:
    state = init_state(model.num_channels, hp, mesh)
  else:
    state = jax.device_put(state, NamedSharding(mesh, P()))
  history = {
    k: np.asarray(history[k], np.float32) if history else np.zeros((0,), np.float32) for k in HISTORY_KEYS
  }
  step = int(state.step)
  sizer, inflight = loops.CallSizer(cfg.job.steps_per_call, cfg.job.max_call_seconds), loops.InFlight()
  while step < hp.iterations:
    n = min(cfg.job.log_every, hp.iterations - step)
    parts, ran = [], 0
    while ran < n:
      k = sizer.steps(n - ran)
      state, m = loops.timed_call(
        sizer, k, train_chunk, model, aux, state, rng, hp=hp, num_steps=k, mesh=mesh
      )
      parts.append(m)
      inflight.add(m)  # the host stays one call ahead: stop() is seen within two calls
      ran += k
      if mesh.size > 1 and k < n:
        # XLA:CPU's in-process all-reduce can deadlock when several multi-device programs are in flight
        # on fewer cores than devices (observed with 4 forced devices on 2 cores): one at a time.
        jax.block_until_ready(state)
      if stop is not None and stop():
        break
    metrics = np.concatenate([np.asarray(p) for p in jax.device_get(parts)])
    for i, k in enumerate(HISTORY_KEYS):
      history[k] = np.concatenate([history[k], metrics[:, i]])
    step += ran
    if not np.all(np.isfinite(metrics)):
      raise FloatingPointError(f'non-finite self-expressive loss at step {step}: {metrics[-1]}')
    if on_chunk is not None and on_chunk(state, history, ran):
      break
  S = np.asarray(jax.device_get(state.S), np.float32)
  return S, history


def feature_model(gen: pggan.Generator, layer: int) -> GeneratorFeatures:
  """G1 / G2 of a PGGAN split at ``layer`` (>= 1) as a feature model."""
  pggan.check_layer(gen.config, layer)
  if layer == 0:
    raise ValueError('config.layer must be >= 1: layer 0 is the latent, it has no feature channels')
  return GeneratorFeatures(gen.config, layer)


def discover(
  gen: pggan.Generator,
  cfg: discovery_config.DiscoverConfigLike,
  rng: Array,
  mesh: jax.sharding.Mesh | None = None,
  **kwargs: Any,
) -> tuple[np.ndarray, dict]:
  """Algorithm 1 on a PGGAN: learns S at ``cfg.model.layer`` -> (S (C, C), history). See module doc.

  ``cfg``: a DiscoverConfig (``presets.discover()``) or a ConfigDict / dict; ``kwargs``: see
  :func:`discover_features` (resume, per-chunk callback).
  """
  cfg = parse(cfg)
  return discover_features(feature_model(gen, cfg.model.layer), gen.params, cfg, rng, mesh, **kwargs)
