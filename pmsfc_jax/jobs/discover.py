"""The discovery job (``launch.discover``): Algorithm 1 with checkpoints, preemption and progress, then
clustering, the subspace folder and its pictures.

``train`` learns S with orbax checkpoints in ``OUT/checkpoints`` (S, Adam state, step, history): it
resumes from the latest one, saves every ``job.checkpoint_every`` steps (rounded to chunks), at the end,
and on SIGTERM: the notice is checked after every jitted call (``jobs/preemption.py``), the state of that
step is saved and the job exits with status 143; the rerun continues from that step and ends equal to an
uninterrupted run. A progress line per chunk shows the losses, the rate and the ETA. ``run`` trains (or reads ``cluster.self_expressive_matrix``), clusters S into R
subspaces and writes ``OUT/{S,masks,labels}.npy``, ``subspaces.json``, ``result/`` and the PNGs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np
from absl import logging
from etils import epath

from pmsfc_jax.core import clustering
from pmsfc_jax.core import config
from pmsfc_jax.core import discovery_config
from pmsfc_jax.core import self_expression as se
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import progress
from pmsfc_jax.io import subspaces
from pmsfc_jax.jobs import plots
from pmsfc_jax.jobs import preemption
from pmsfc_jax.models import pggan


def _run_config(cfg: discovery_config.DiscoverConfig) -> dict:
  """What a checkpointed run must share with its resumption (the iteration count may grow)."""
  run_cfg = {k: v for k, v in dataclasses.asdict(cfg.optim).items() if k != 'iterations'}
  run_cfg.update(layer=cfg.model.layer, seed=cfg.seed)
  return run_cfg


def train(
  gen: pggan.Generator,
  cfg: Any,
  workdir: str | os.PathLike,
  rng: jax.Array | None = None,
  mesh: jax.sharding.Mesh | None = None,
) -> tuple[np.ndarray, dict]:
  """Algorithm 1 with orbax checkpoints in ``workdir/checkpoints`` (see the module docstring)."""
  cfg = se.parse(cfg)
  hp = cfg.optim
  rng = jax.random.key(cfg.seed) if rng is None else rng
  mesh = se.make_mesh() if mesh is None else mesh
  se.check_mesh(hp, mesh)
  ckpt_dir = epath.Path(workdir) / 'checkpoints'
  mngr = checkpoints.checkpoint_manager(ckpt_dir, max_to_keep=2, async_=True)
  model = se.feature_model(gen, cfg.model.layer)
  state, history = None, None
  run_cfg = _run_config(cfg)
  latest = mngr.latest_step()
  if latest is not None:
    template = se.init_state(model.num_channels, hp, mesh)
    restored = mngr.restore(
      latest, args=checkpoints.restore_args(trees={'state': template, 'history': None}, json=['config'])
    )
    saved = restored['config']
    diff = {k: (saved.get(k), v) for k, v in run_cfg.items() if saved.get(k) != v}
    if diff:
      raise ValueError(
        f'{ckpt_dir}: cannot resume, the config differs from the checkpointed run '
        f'(key: (saved, now)): {diff}. Use a new --output_dir.'
      )
    state = se.DiscoveryState(*restored['state'])
    if int(state.step) > hp.iterations:
      raise ValueError(
        f'{ckpt_dir}: the checkpoint is at step {int(state.step)}, past '
        f'--iterations={hp.iterations}; use a new --output_dir or more iterations'
      )
    history = {k: np.asarray(v) for k, v in restored['history'].items()}
    logging.info('resuming subspace discovery from step %d (%s)', int(state.step), ckpt_dir)

  last_saved = latest or 0
  report = progress.Progress(hp.iterations, 'step', 'steps', log_every_s=0, done=last_saved)

  def save(st, hist):
    nonlocal last_saved
    s = int(st.step)
    if s == last_saved and latest == s:
      return
    mngr.save(
      s,
      args=checkpoints.save_args(
        trees={'state': st, 'history': {k: np.asarray(v) for k, v in hist.items()}}, json={'config': run_cfg}
      ),
      force=True,
    )
    last_saved = s

  with preemption.Preemption() as preempt:

    def on_chunk(st, hist, n):
      report.update(
        n,
        info=f'L_recF {hist["rec_f"][-1]:.6g}  L_recD {hist["rec_d"][-1]:.6g}  '
        f'L1 {hist["l1"][-1]:.6g}  total {hist["total"][-1]:.6g}',
      )
      s = int(st.step)
      if preempt.requested or s >= hp.iterations or s - last_saved >= cfg.job.checkpoint_every:
        save(st, hist)
      return preempt.requested

    try:
      if latest is not None and int(state.step) >= hp.iterations:
        S = np.asarray(state.S, np.float32)
      else:
        S, history = se.discover_features(
          model,
          gen.params,
          cfg,
          rng,
          mesh,
          state=state,
          history=history,
          on_chunk=on_chunk,
          stop=lambda: preempt.requested,
        )
      mngr.wait_until_finished()
    finally:
      mngr.close()
      report.close()
  if preempt.requested:
    logging.warning('SIGTERM: saved step %d to %s; rerun the same command to resume', last_saved, ckpt_dir)
    raise preemption.Preempted()
  if history is None:
    history = {k: np.zeros((0,), np.float32) for k in se.HISTORY_KEYS}
  return S, {k: np.asarray(v)[: hp.iterations] for k, v in history.items()}


def run(cfg: Any) -> subspaces.Subspaces:
  """``launch.discover``: S (trained with :func:`train`, or read from ``cluster.self_expressive_matrix``)
  -> clustering -> ``job.output_dir`` (orbax + S.npy, masks.npy, labels.npy, subspaces.json, PNGs)."""
  cfg = se.parse(cfg)
  if not cfg.job.output_dir:
    raise config.ConfigError('--output_dir is required')
  out = epath.Path(cfg.job.output_dir)
  gen = checkpoints.load_generator(cfg.model.generator) if cfg.model.generator else None
  layer = cfg.model.layer
  num_channels = None
  if gen is not None:
    num_channels = se.feature_model(gen, layer).num_channels
  c = cfg.cluster
  history = None
  if c.self_expressive_matrix:
    S = subspaces.load_matrix(c.self_expressive_matrix, num_channels, c.matrix_layout, c.diagonal)
    source = os.fspath(c.self_expressive_matrix)
  else:
    if gen is None:
      raise config.ConfigError('--generator is required unless --self_expressive_matrix is given')
    S, history = train(gen, cfg, out)
    source = 'trained'
  labels, aff = clustering.cluster(
    S, c.num_subspaces, c.affinity, cfg.seed, c.rho, c.subspace_dim, c.alpha, c.diagonal
  )
  meta = {
    'affinity': c.affinity,
    **(
      {'rho': c.rho, 'subspace_dim': c.subspace_dim, 'alpha': c.alpha, 'diagonal': c.diagonal}
      if c.affinity != 'paper'
      else {}
    ),
    'seed': cfg.seed,
    'source': source,
    'generator': os.fspath(cfg.model.generator) if cfg.model.generator else None,
    'iterations': int(len(history['total'])) if history else None,
  }
  subspaces.write_subspaces(out, S, labels, c.num_subspaces, layer, history, meta)
  masks = clustering.masks_from_labels(labels, c.num_subspaces)
  if cfg.job.plots and jax.process_index() == 0:
    if history is not None and len(history['total']):
      plots.plot_losses(history, out / 'losses.png')
    plots.plot_affinity(aff, labels, out / f'affinity_{c.affinity}.png')
    if gen is not None:
      plots.exchange_grids(gen, layer, masks, out, num_samples=cfg.job.exchange_samples, seed=cfg.seed)
  logging.info('wrote %d subspaces (sizes %s) to %s', masks.shape[0], masks.sum(axis=1).tolist(), out)
  return subspaces.Subspaces(
    masks=masks,
    labels=np.asarray(labels, np.int64),
    S=np.asarray(S, np.float32),
    layer=layer,
    meta=json.loads((out / 'subspaces.json').read_text()) if jax.process_index() == 0 else meta,
  )
