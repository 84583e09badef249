"""Prior subspace discovery (paper: "Explore GAN Prior Subspaces", Eq. 3-5, Algorithm 1).

A self-expressive layer S (C x C, no bias, no activation) sits between G1 and G2 of the split at
``layer``. With F(z) the flattened G1 features (HW x C per sample, channels as columns)::

  L_recF = E_z ||F(z) - F(z) S||^2                      (Eq. 3)
  L_recD = E_z ||G2(G1(z)) - G2(T(F(z) S))||^2          (Eq. 4)
  min_S  L_recF + lambda L_recD + mu ||S||_1,  s.t. diag(S) = 0     (Eq. 5)

diag(S) = 0 is structural, not a penalty: the forward pass uses ``S * (1 - I)``, the gradient is masked
the same way and the stored S is re-masked after every update, so its diagonal is exactly 0 at all
times. S is then clustered (:mod:`pmsfc_jax.clustering`) into R subspaces (binary masks R x C).

What the official PyTorch code (``self_express_gan2.py``) does, and what is configurable here:

* Adam lr 1e-4, betas (0.9, 0.999) (paper), lambda = ``beta0`` = 10, mu = ``beta1`` = 1 (paper);
* batch of 4 fresh z ~ N(0, I) per iteration (``config.batch_size``, default 4);
* S initialised to a constant 1e-4 (``config.init_value``; the official diagonal keeps 1e-4 but is
  masked in the forward pass; here it is stored as 0);
* every term is a ``torch.mean`` over all its elements (``config.reduction='mean'``, the default). The
  paper's norms are sums: ``reduction='sum'`` gives per-sample squared norms averaged over the batch for
  L_recF and L_recD, and the plain sum of |S| for the L1 term;
* its matrix is stored transposed (``F_rec = M F`` with channels as rows, M = S^T);
  :func:`pmsfc_jax.clustering.from_official_layout` converts.

Data parallelism: the global batch is sharded over a 1-D ``('data',)`` mesh (``jax.make_mesh`` +
``NamedSharding``), S and the optimizer state are replicated, and XLA averages the gradients. The latent
of global batch index i at step t is drawn from ``fold_in(fold_in(rng, t), i)``, so a run does not depend
on the number of devices (1 CPU, 8 GPUs or a pod slice give the same S up to float summation order).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec as P

from pmsfc_jax import checkpoints
from pmsfc_jax import clustering
from pmsfc_jax import distributed
from pmsfc_jax import imageio
from pmsfc_jax import loops
from pmsfc_jax.models import pggan

Array = jax.Array
HISTORY_KEYS = ('rec_f', 'rec_d', 'l1', 'total')
REDUCTIONS = ('mean', 'sum')
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------------------------
# Hyper-parameters (static, hashable) from an ml_collections config.


@dataclasses.dataclass(frozen=True)
class HParams:
  """The static training hyper-parameters of Algorithm 1 (paper defaults)."""
  iterations: int = 3000
  batch_size: int = 4
  lr: float = 1e-4
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  lam: float = 10.0      # lambda, weight of L_recD (Eq. 5)
  mu: float = 1.0        # mu, weight of ||S||_1 (Eq. 5)
  reduction: str = 'mean'
  init_value: float = 1e-4
  log_every: int = 100

  def __post_init__(self):
    if self.reduction not in REDUCTIONS:
      raise ValueError(f'config.reduction must be one of {REDUCTIONS}, got {self.reduction!r}')
    for name in ('iterations', 'batch_size', 'log_every'):
      v = getattr(self, name)
      if not isinstance(v, (int, np.integer)) or v < (0 if name == 'iterations' else 1):
        raise ValueError(f'config.{name} must be a positive int, got {v!r}')

  @classmethod
  def from_config(cls, config) -> 'HParams':
    kw = {}
    for f in dataclasses.fields(cls):
      if f.name in config:
        v = config[f.name]
        kw[f.name] = int(v) if isinstance(f.default, int) else (float(v) if isinstance(f.default, float) else v)
    return cls(**kw)


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


def _optimizer(hp: HParams) -> optax.GradientTransformation:
  return optax.adam(hp.lr, b1=hp.b1, b2=hp.b2, eps=hp.eps)


def _offdiag(c: int) -> Array:
  return 1.0 - jnp.eye(c, dtype=jnp.float32)


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """``distributed.make_mesh`` over ``devices``, by default ALL devices of all hosts: discovery is one
  data-parallel job (the batch job, by contrast, gives each host its own local mesh)."""
  return distributed.make_mesh(devices=jax.devices() if devices is None else devices)


def init_state(num_channels: int, hp: HParams, mesh: jax.sharding.Mesh | None = None) -> DiscoveryState:
  """S = init_value off the diagonal, 0 on it (official init: a constant 1e-4), replicated on the mesh."""
  S = jnp.full((num_channels, num_channels), hp.init_value, jnp.float32) * _offdiag(num_channels)
  state = DiscoveryState(S, _optimizer(hp).init(S), jnp.zeros((), jnp.int32))
  if mesh is not None:
    state = jax.device_put(state, NamedSharding(mesh, P()))
  return state


def self_expressive_losses(S: Array, features: Array, hp: HParams,
                           decode: Optional[Callable[[Array], Array]] = None,
                           images: Optional[Array] = None) -> tuple[Array, dict]:
  """Eq. 3-5 for one batch of features (B, H, W, C) -> (total, {rec_f, rec_d, l1, total}).

  ``S`` is masked with (1 - I) here, so the diagonal never takes part. ``decode`` is G2 (None or
  lam == 0 drops L_recD); ``images`` = G2(F) may be passed in when already computed.
  """
  b, c = features.shape[0], features.shape[-1]
  Sm = S * _offdiag(c)
  flat = features.reshape(b, -1, c)                                   # F(z): (B, HW, C)
  rec = jnp.einsum('bpc,cd->bpd', flat, Sm)                           # F(z) S
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


def _train_chunk_impl(model, aux, state: DiscoveryState, base_key: Array, *, hp: HParams, num_steps: int,
                      mesh: jax.sharding.Mesh | None) -> tuple[DiscoveryState, Array]:
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
    (_, terms), grad = jax.value_and_grad(self_expressive_losses, has_aux=True)(
        st.S, feats, hp, decode)
    grad = grad * mask
    updates, opt_state = tx.update(grad, st.opt_state, st.S)
    S = optax.apply_updates(st.S, updates) * mask                      # diag stays exactly 0
    return DiscoveryState(S, opt_state, st.step + 1), jnp.stack([terms[k] for k in HISTORY_KEYS])

  return loops.scan_steps(body, state, num_steps)


train_chunk = jax.jit(_train_chunk_impl, static_argnames=('model', 'hp', 'num_steps', 'mesh'),
                      donate_argnames=('state',))
train_chunk.__doc__ = """Jitted :func:`_train_chunk_impl` (state donated)."""


def _check_mesh(hp: HParams, mesh: jax.sharding.Mesh):
  if hp.batch_size % mesh.size:
    raise ValueError(f'config.batch_size={hp.batch_size} must be a multiple of the number of devices '
                     f'in the mesh ({mesh.size})')


def discover_features(model, aux, config, rng: Array, mesh: jax.sharding.Mesh | None = None,
                      state: DiscoveryState | None = None, history: dict | None = None,
                      on_chunk: Callable[[DiscoveryState, dict, float], bool] | None = None,
                      ) -> tuple[np.ndarray, dict]:
  """Runs Algorithm 1 for any feature model (``model.features(aux, keys) -> (B,H,W,C)``, optional
  ``model.decode(aux, F)``). Chunks of ``config.log_every`` steps, dispatched ``config.steps_per_call``
  steps per jitted call (0 = auto: 1 on CPU, the whole chunk in one lax.scan elsewhere; loops.py).

  ``state``/``history`` resume a run; ``on_chunk(state, history, seconds)`` is called after every chunk
  and may return True to stop early (preemption). Returns (S (C, C) float32 numpy, history dict of
  per-step numpy arrays ``rec_f, rec_d, l1, total``).
  """
  hp = HParams.from_config(config)
  mesh = make_mesh() if mesh is None else mesh
  _check_mesh(hp, mesh)
  c = model.num_channels
  if state is None:
    state = init_state(c, hp, mesh)
  else:
    state = jax.device_put(state, NamedSharding(mesh, P()))
  history = {k: np.asarray(history[k], np.float32) if history else np.zeros((0,), np.float32)
             for k in HISTORY_KEYS}
  step = int(state.step)
  while step < hp.iterations:
    n = min(hp.log_every, hp.iterations - step)
    t0 = time.perf_counter()
    per_call = loops.steps_per_call(config.get('steps_per_call', 0) if hasattr(config, 'get') else 0, n)
    parts = []
    for _ in range(n // per_call):
      state, m = train_chunk(model, aux, state, rng, hp=hp, num_steps=per_call, mesh=mesh)
      parts.append(m)
      if mesh.size > 1 and per_call < n:
        # XLA:CPU's in-process all-reduce can deadlock when several multi-device programs are in flight
        # on fewer cores than devices (observed with 4 forced devices on 2 cores): one at a time.
        jax.block_until_ready(state)
    if n % per_call:
      state, m = train_chunk(model, aux, state, rng, hp=hp, num_steps=n % per_call, mesh=mesh)
      parts.append(m)
    metrics = np.concatenate([np.asarray(p) for p in jax.device_get(parts)])
    seconds = time.perf_counter() - t0
    for i, k in enumerate(HISTORY_KEYS):
      history[k] = np.concatenate([history[k], metrics[:, i]])
    step += n
    if not np.all(np.isfinite(metrics)):
      raise FloatingPointError(f'non-finite self-expressive loss at step {step}: {metrics[-1]}')
    if on_chunk is not None and on_chunk(state, history, seconds):
      break
  S = np.asarray(jax.device_get(state.S), np.float32)
  return S, history


def discover(gen: pggan.Generator, config, rng: Array, mesh: jax.sharding.Mesh | None = None,
             **kwargs) -> tuple[np.ndarray, dict]:
  """Algorithm 1 on a PGGAN: learns S at ``config.layer`` -> (S (C, C), history). See module doc."""
  layer = int(config.layer)
  pggan._check_layer(gen.config, layer)
  if layer == 0:
    raise ValueError('config.layer must be >= 1: layer 0 is the latent, it has no feature channels')
  return discover_features(GeneratorFeatures(gen.config, layer), gen.params, config, rng, mesh, **kwargs)


# ----------------------------------------------------------------------------------------------------
# Resumable driver with orbax (used by the CLI).


def _ocp():
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp


def train(gen: pggan.Generator, config, workdir, rng: Array | None = None,
          mesh: jax.sharding.Mesh | None = None) -> tuple[np.ndarray, dict]:
  """Algorithm 1 with orbax checkpoints in ``workdir/checkpoints`` (S, Adam state, step, history).

  Resumes from the latest checkpoint; saves every ``config.checkpoint_every`` steps (rounded to
  chunks), at the end, and on SIGTERM (then raises SystemExit(143) after the save). Logs the losses
  every chunk with rate and ETA.
  """
  ocp = _ocp()
  hp = HParams.from_config(config)
  rng = jax.random.key(int(config.get('seed', 0))) if rng is None else rng
  mesh = make_mesh() if mesh is None else mesh
  _check_mesh(hp, mesh)
  ckpt_dir = epath.Path(workdir) / 'checkpoints'
  options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True, cleanup_tmp_directories=True)
  mngr = ocp.CheckpointManager(_abs(ckpt_dir), options=options)
  model = GeneratorFeatures(gen.config, int(config.layer))
  template = init_state(model.num_channels, hp, mesh)
  state, history = None, None
  run_cfg = {k: v for k, v in dataclasses.asdict(hp).items() if k not in ('iterations', 'log_every')}
  run_cfg.update(layer=int(config.layer), seed=int(config.get('seed', 0)))
  latest = mngr.latest_step()
  if latest is not None:
    restored = mngr.restore(latest, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(template), history=ocp.args.StandardRestore(),
        config=ocp.args.JsonRestore()))
    saved = restored['config']
    diff = {k: (saved.get(k), v) for k, v in run_cfg.items() if saved.get(k) != v}
    if diff:
      raise ValueError(f'{ckpt_dir}: cannot resume, the config differs from the checkpointed run '
                       f'(key: (saved, now)): {diff}. Use a new --output_dir.')
    state = DiscoveryState(*restored['state'])
    if int(state.step) > hp.iterations:
      raise ValueError(f'{ckpt_dir}: the checkpoint is at step {int(state.step)}, past '
                       f'--iterations={hp.iterations}; use a new --output_dir or more iterations')
    history = {k: np.asarray(v) for k, v in restored['history'].items()}
    logging.info('resuming subspace discovery from step %d (%s)', int(state.step), ckpt_dir)

  stop = {'flag': False}
  prev = signal.getsignal(signal.SIGTERM) if _main_thread() else None
  if _main_thread():
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__('flag', True))
  every = int(config.get('checkpoint_every', 500))
  last_saved = {'step': latest or 0}
  t_start, step0 = time.perf_counter(), (latest or 0)

  def save(st, hist):
    s = int(st.step)
    if s == last_saved['step'] and latest == s:
      return
    mngr.save(s, args=ocp.args.Composite(
        state=ocp.args.StandardSave(st),
        history=ocp.args.StandardSave({k: np.asarray(v) for k, v in hist.items()}),
        config=ocp.args.JsonSave(run_cfg)), force=True)
    last_saved['step'] = s

  def on_chunk(st, hist, seconds):
    s = int(st.step)
    done = s - step0
    rate = done / max(time.perf_counter() - t_start, 1e-9)
    eta = (hp.iterations - s) / max(rate, 1e-9)
    logging.info('step %d/%d  L_recF %.6g  L_recD %.6g  L1 %.6g  total %.6g  (%.1f steps/s, ETA %s)',
                 s, hp.iterations, hist['rec_f'][-1], hist['rec_d'][-1], hist['l1'][-1],
                 hist['total'][-1], rate, _fmt_seconds(eta))
    if stop['flag'] or s >= hp.iterations or s - last_saved['step'] >= every:
      save(st, hist)
    return stop['flag']

  try:
    if latest is not None and int(state.step) >= hp.iterations:
      S = np.asarray(state.S, np.float32)
    else:
      S, history = discover_features(model, gen.params, config, rng, mesh, state=state, history=history,
                                     on_chunk=on_chunk)
    mngr.wait_until_finished()
  finally:
    mngr.close()
    if _main_thread():
      signal.signal(signal.SIGTERM, prev or signal.SIG_DFL)
  if stop['flag']:
    logging.warning('SIGTERM: saved step %d to %s; rerun the same command to resume', last_saved['step'],
                    ckpt_dir)
    raise SystemExit(143)
  if history is None:
    history = {k: np.zeros((0,), np.float32) for k in HISTORY_KEYS}
  return S, {k: np.asarray(v)[:hp.iterations] for k, v in history.items()}


def _main_thread() -> bool:
  import threading  # pylint: disable=g-import-not-at-top
  return threading.current_thread() is threading.main_thread()


def _fmt_seconds(s: float) -> str:
  s = int(round(s))
  return f'{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}'


def _abs(path: epath.Path) -> epath.Path:
  return path if str(path).startswith('gs://') else path.absolute()


# ----------------------------------------------------------------------------------------------------
# Subspace directories.


@dataclasses.dataclass(frozen=True)
class Subspaces:
  """A partition of the channels of ``layer`` into R subspaces (paper's m = {m_1..m_R}, Eq. 6)."""
  masks: np.ndarray            # (R, C) bool
  labels: np.ndarray           # (C,) int, masks[labels[c], c] is True
  S: Optional[np.ndarray]      # (C, C) float32 (paper layout), None if not stored
  layer: int
  meta: dict = dataclasses.field(default_factory=dict)

  @property
  def num_subspaces(self) -> int:
    return self.masks.shape[0]

  @property
  def num_channels(self) -> int:
    return self.masks.shape[1]


def load_matrix(path, num_channels: int | None = None, layout: str = 'paper') -> np.ndarray:
  """Reads S from ``.npy`` (never unpickles), validates it, zeroes its diagonal.

  ``layout='official'`` transposes a matrix saved by the official PyTorch code (``F_rec = M F``).
  """
  S = imageio.load_npy(path, 'self-expressive matrix')
  S = clustering.check_matrix(S, num_channels, name=str(path))
  if layout == 'official':
    S = S.T
  elif layout != 'paper':
    raise ValueError(f"matrix_layout must be 'paper' or 'official', got {layout!r}")
  return clustering.zero_diagonal(S).astype(np.float32)


def write_subspaces(out_dir, S: np.ndarray, labels: np.ndarray, num_subspaces: int, layer: int,
                    history: dict | None = None, meta: dict | None = None) -> epath.Path:
  """Writes the subspace directory: S.npy, masks.npy, labels.npy, subspaces.json and an orbax
  checkpoint ``result/`` (S, masks, labels, history, config). Call on every process; process 0 writes.
  subspaces.json is written last, so a directory that has it is complete."""
  out_dir = epath.Path(out_dir)
  masks = clustering.check_masks(clustering.masks_from_labels(labels, num_subspaces))
  info = {'format_version': FORMAT_VERSION, 'layer': int(layer), 'num_subspaces': int(num_subspaces),
          'channels': int(masks.shape[1]), 'sizes': [int(x) for x in masks.sum(axis=1)], **(meta or {})}
  history = {k: np.asarray(v, np.float32) for k, v in (history or {}).items()}
  if jax.process_index() == 0:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, arr in (('S.npy', np.asarray(S, np.float32)), ('masks.npy', masks),
                      ('labels.npy', np.asarray(labels, np.int32))):
      _save_npy(out_dir / name, arr)
  # Every process takes part in the orbax save (it synchronises hosts); only the primary one writes.
  ocp = _ocp()
  tree = {'S': np.asarray(S, np.float32), 'masks': masks.astype(np.uint8),
          'labels': np.asarray(labels, np.int32)}
  if history:
    tree['history'] = history
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(_abs(out_dir / 'result'), args=ocp.args.Composite(
        arrays=ocp.args.StandardSave(tree), config=ocp.args.JsonSave(info)), force=True)
  if jax.process_index() == 0:
    imageio.atomic_write_bytes(out_dir / 'subspaces.json',
                               (json.dumps(info, indent=2, sort_keys=True) + '\n').encode())
  return out_dir


def _save_npy(path: epath.Path, arr: np.ndarray):
  import io  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  np.save(buf, arr, allow_pickle=False)
  imageio.atomic_write_bytes(path, buf.getvalue())


def load_subspaces(dir_or_name) -> Subspaces:
  """A subspace directory written by ``launch.discover`` (or a shipped name like 'demo') -> Subspaces.

  Reads the plain ``.npy`` files (no pickles) and ``subspaces.json``; falls back to the orbax
  ``result/`` checkpoint when the .npy files are absent. Validates that the masks partition the channels.
  """
  path = checkpoints.resolve_asset(dir_or_name, 'subspaces')
  info_path = path / 'subspaces.json'
  if not info_path.exists():
    raise FileNotFoundError(f'{path} is not a subspace directory: missing {info_path} '
                            '(create one with `python -m launch.discover`)')
  try:
    info = json.loads(info_path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f'{info_path}: invalid JSON ({e})') from e
  for key in ('layer', 'num_subspaces', 'channels'):
    if key not in info:
      raise ValueError(f'{info_path}: missing key {key!r}')

  def npy(name):
    p = path / name
    if not p.exists():
      return None
    with p.open('rb') as f:
      return np.load(f, allow_pickle=False)

  masks, labels, S = npy('masks.npy'), npy('labels.npy'), npy('S.npy')
  if masks is None and (path / 'result').exists():
    ocp = _ocp()
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
      tree = ckptr.restore(_abs(path / 'result'),
                           args=ocp.args.Composite(arrays=ocp.args.StandardRestore()))['arrays']
    masks, labels, S = (np.asarray(tree['masks']), np.asarray(tree['labels']), np.asarray(tree['S']))
  if masks is None:
    raise FileNotFoundError(f'{path}: missing masks.npy (and no orbax result/ checkpoint)')
  masks = clustering.check_masks(masks, int(info['channels']), name=str(path / 'masks.npy'))
  if masks.shape[0] != int(info['num_subspaces']):
    raise ValueError(f'{path}: masks.npy has {masks.shape[0]} subspaces, subspaces.json says '
                     f'{info["num_subspaces"]}')
  derived = np.argmax(masks, axis=0)
  if labels is None:
    labels = derived
  elif labels.shape != derived.shape or not np.array_equal(labels, derived):
    raise ValueError(f'{path}: labels.npy does not match masks.npy')
  if S is not None:
    S = clustering.check_matrix(S, masks.shape[1], name=str(path / 'S.npy')).astype(np.float32)
  return Subspaces(masks=masks, labels=np.asarray(labels, np.int64), S=S, layer=int(info['layer']),
                   meta=info)


# ----------------------------------------------------------------------------------------------------
# The whole job (CLI): train or load S, cluster, write the directory, draw the pictures.


def run(config) -> Subspaces:
  """``launch.discover``: S (trained with :func:`train`, or read from ``config.self_expressive_matrix``)
  -> clustering -> ``config.output_dir`` (orbax + S.npy, masks.npy, labels.npy, subspaces.json, PNGs).
  """
  if not config.get('output_dir'):
    raise ValueError('--output_dir is required')
  out = epath.Path(config.output_dir)
  gen = None
  if config.get('generator'):
    gen = checkpoints.load_generator(config.generator)
  layer = int(config.layer)
  num_channels = None
  if gen is not None:
    pggan._check_layer(gen.config, layer)
    if layer == 0:
      raise ValueError('--layer must be >= 1: layer 0 is the latent, it has no feature channels')
    num_channels = pggan.feature_shape(gen.config, layer)[-1]
  history = None
  if config.get('self_expressive_matrix'):
    S = load_matrix(config.self_expressive_matrix, num_channels, config.get('matrix_layout', 'paper'))
    source = os.fspath(config.self_expressive_matrix)
  else:
    if gen is None:
      raise ValueError('--generator is required unless --self_expressive_matrix is given')
    S, history = train(gen, config, out)
    source = 'trained'
  seed = int(config.get('seed', 0))
  labels, aff = clustering.cluster(
      S, int(config.num_subspaces), config.affinity, seed=seed, rho=float(config.get('rho', 0.2)),
      subspace_dim=int(config.get('subspace_dim', 6)), alpha=float(config.get('alpha', 2.0)))
  meta = {'affinity': config.affinity, 'seed': seed, 'source': source,
          'generator': os.fspath(config.generator) if config.get('generator') else None,
          'iterations': int(len(history['total'])) if history else None}
  write_subspaces(out, S, labels, int(config.num_subspaces), layer, history, meta)
  masks = clustering.masks_from_labels(labels, int(config.num_subspaces))
  if config.get('plots', True) and jax.process_index() == 0:
    from pmsfc_jax import plots  # pylint: disable=g-import-not-at-top
    if history is not None and len(history['total']):
      plots.plot_losses(history, out / 'losses.png')
    plots.plot_affinity(aff, labels, out / f'affinity_{config.affinity}.png')
    if gen is not None:
      plots.exchange_grids(gen, layer, masks, out, num_samples=int(config.get('exchange_samples', 4)),
                           seed=seed)
  logging.info('wrote %d subspaces (sizes %s) to %s', masks.shape[0], masks.sum(axis=1).tolist(), out)
  return Subspaces(masks=masks, labels=np.asarray(labels, np.int64), S=np.asarray(S, np.float32),
                   layer=layer, meta=json.loads((out / 'subspaces.json').read_text())
                   if jax.process_index() == 0 else meta)
