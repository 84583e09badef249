"""The GAN training job of the demo generator (``launch.train_pggan``): the loop around ``core/gan.py``.

``train(cfg, workdir)`` trains (or resumes) in ``workdir``: ``checkpoints/`` (orbax, the whole
:class:`gan.TrainState`), ``samples/ema_STEP.png`` (fixed z), ``metrics.jsonl`` and ``config.json``.
Preemption (``jobs/preemption.py``): SIGTERM / SIGINT are checked after every train step (one step per
jitted call, whatever ``job.steps_per_call``: that setting is the cadence of host syncs of the metrics
window; the step count is kept on the host and ``loops.InFlight`` keeps the host one step ahead of the
device, so the device is never idle waiting for the host and a notice waits for two steps at most); the
state of that step is saved and :class:`preemption.Preempted` exits with status 143. The rerun finishes
the interrupted window (up to the next multiple of ``steps_per_call``) and ends equal to an
uninterrupted run. ``export_generator`` writes the EMA generator (Gs) as a generator checkpoint.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from typing import Any, Callable

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from pmsfc_jax.core import config
from pmsfc_jax.core import gan
from pmsfc_jax.core import loops
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import datasets
from pmsfc_jax.io import images
from pmsfc_jax.io import progress
from pmsfc_jax.jobs import preemption
from pmsfc_jax.models import discriminator as disc
from pmsfc_jax.models import pggan

PyTree = Any


def parse(cfg: Any) -> gan.TrainConfig:
  return config.parse(gan.TrainConfig, cfg)


def checkpoint_manager(workdir: str | os.PathLike, max_to_keep: int = 3) -> ocp.CheckpointManager:
  return checkpoints.checkpoint_manager(
    epath.Path(workdir) / 'checkpoints', max_to_keep=max_to_keep, async_=True
  )


def save_state(mngr: ocp.CheckpointManager, state: gan.TrainState, info: dict | None = None) -> None:
  """Saves ``state`` (as a state dict) plus JSON ``info`` at step ``state.step`` (async; orbax-atomic)."""
  step = int(jax.device_get(state.step))
  mngr.save(
    step,
    args=checkpoints.save_args(
      trees={'state': flax.serialization.to_state_dict(state)}, json={'info': info or {}}
    ),
    force=True,
  )


def restore_state(
  mngr: ocp.CheckpointManager, template: gan.TrainState, step: int | None = None
) -> tuple[gan.TrainState, dict]:
  """Restores the latest (or ``step``) checkpoint into ``template``'s structure -> (state, info)."""
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no training checkpoint in {mngr.directory}')
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, flax.serialization.to_state_dict(template))
  restored = mngr.restore(step, args=checkpoints.restore_args(trees={'state': target}, json=['info']))
  state = flax.serialization.from_state_dict(template, restored['state'])
  return state, dict(restored['info'] or {})


@functools.lru_cache(maxsize=4)
def _jit_generate(g_cfg: pggan.GeneratorConfig) -> Callable:
  return jax.jit(functools.partial(pggan.generate, g_cfg))


def sample_grid(
  g_cfg: pggan.GeneratorConfig, params: PyTree, z: jax.Array, ncols: int = 8, upscale: int = 1
) -> np.ndarray:
  """Float [-1, 1] grid image of G(z) (clipped; ``make_grid`` layout, pad 2), nearest-upscaled."""
  imgs = np.asarray(_jit_generate(g_cfg)(params, z))
  grid = images.make_grid(np.clip(imgs, -1, 1), ncols=ncols)
  return np.repeat(np.repeat(grid, upscale, axis=0), upscale, axis=1) if upscale > 1 else grid


def write_demo_samples(
  generator: pggan.Generator,
  path: str | epath.Path,
  seed: int = 0,
  num_samples: int = 16,
  ncols: int = 8,
  upscale: int = 4,
) -> np.ndarray:
  """Writes the sample grid of ``generator`` for ``z = normal(key(seed), (num_samples, z_dim))``.

  The latents follow ``launch.generate``'s ``--seed`` semantics. Cell i (row-major) covers pixels
  ``[r * (R + 2) * upscale, ...)`` with R the resolution; upscaling replicates pixels (nearest).
  """
  z = jax.random.normal(jax.random.key(seed), (num_samples, generator.config.z_dim))
  grid = sample_grid(generator.config, generator.params, z, ncols=ncols, upscale=upscale)
  images.save_image(path, grid)
  return grid


def load_dataset(cfg: gan.TrainConfig, workdir: epath.Path) -> np.ndarray:
  if not cfg.data.folder:
    raise config.ConfigError(
      'config.data.folder is required: the folder of aligned CelebA faces 000001.jpg ... (img_align_celeba '
      'of the CelebA release; the demo model used 000001-009000), e.g. --config.data.folder=DIR'
    )
  paths = datasets.numbered_paths(cfg.data.folder, cfg.data.first, cfg.data.last)
  res = cfg.model.generator.resolution
  cache = (workdir / f'data_{res}.npy') if cfg.data.cache else None
  return datasets.load_images(paths, res, cache=cache)


def _metrics_row(window: list, step: int, seconds: float, wall: float, job: gan.TrainJob, batch: int) -> dict:
  stacked = {k: np.concatenate([np.asarray(m[k]) for m in window]) for k in window[0]}
  row = {k: float(np.nanmean(v)) if np.isfinite(v).any() else None for k, v in stacked.items()}
  row.update(
    step=step,
    sec_per_step=seconds / max(1, len(next(iter(stacked.values())))),
    wall_seconds=wall,
    images_seen=step * batch,
  )
  if not all(np.isfinite(v).all() for k, v in stacked.items() if k != 'r1'):
    raise FloatingPointError(f'non-finite losses at step {step}: {row}')
  return row


def train(cfg: Any, workdir: str | os.PathLike) -> gan.TrainState:
  """Trains (or resumes) a PGGAN in ``workdir`` (see the module docstring)."""
  cfg = parse(cfg)
  job, hp = cfg.job, cfg.optim
  workdir = epath.Path(workdir)
  is_main = jax.process_index() == 0
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / 'config.json').write_text(json.dumps(config.to_dict(cfg), indent=2))
  g_cfg, d_cfg = gan.networks(cfg)

  t = time.time()
  images_np = load_dataset(cfg, workdir)
  logging.info(
    'dataset: %d images %s from %s in %.1fs',
    images_np.shape[0],
    images_np.shape[1:],
    cfg.data.folder,
    time.time() - t,
  )
  data = jax.device_put(images_np)

  state = gan.create_train_state(g_cfg, d_cfg, hp, cfg.seed)
  mngr = checkpoint_manager(workdir, job.keep_checkpoints)
  info = {'wall_seconds': 0.0}
  if mngr.latest_step() is not None:
    state, info = restore_state(mngr, state)
    logging.info('resumed from step %d (%.0fs of training so far)', int(state.step), info['wall_seconds'])
  fixed_z = jax.random.normal(jax.random.key(job.sample_seed), (job.num_samples, g_cfg.z_dim))
  step_fn = gan.make_train_fn(g_cfg, d_cfg, hp, 1)  # the notice is checked after every step

  step = int(state.step)
  wall = float(info.get('wall_seconds', 0.0))
  window = []
  t_window = time.time()
  report = progress.Progress(job.total_steps, 'step', 'steps', log_every_s=0, done=step)
  inflight = loops.InFlight()  # a notice waits for two steps at most (core/loops.py)
  with preemption.Preemption((signal.SIGTERM, signal.SIGINT)) as preempt:
    try:
      while step < job.total_steps and not preempt.requested:
        t0 = time.time()
        parts = []
        for _ in range(job.steps_per_call - step % job.steps_per_call):  # to the next multiple
          state, m = step_fn(state, data, first_step=step)
          inflight.add(state.step)  # the host stays one step ahead of the device, never waits on each
          parts.append(m)
          step += 1
          if preempt.requested:
            break
        metrics = jax.tree.map(lambda *v: np.concatenate(v), *jax.device_get(parts))
        wall += time.time() - t0
        window.append(metrics)
        if step % job.log_every == 0 or step >= job.total_steps:
          row = _metrics_row(window, step, time.time() - t_window, wall, job, hp.batch_size)
          report.update(
            step - report.done,
            info=f'd_loss {row["d_loss"]:.4f}  g_loss {row["g_loss"]:.4f}  '
            f'd_real {row["d_real"]:.3f}  d_fake {row["d_fake"]:.3f}  r1 {row["r1"]}  '
            f'{row["sec_per_step"]:.3f}s/step',
          )
          if is_main:
            with (workdir / 'metrics.jsonl').open('a') as f:
              f.write(json.dumps(row) + '\n')
          window, t_window = [], time.time()
        if step % job.sample_every == 0 and is_main:
          grid = sample_grid(g_cfg, state.g_ema, fixed_z)
          images.save_image(workdir / 'samples' / f'ema_{step:07d}.png', grid)
          images.save_image(workdir / 'samples' / 'latest.png', grid)
        if step % job.checkpoint_every == 0 or step >= job.total_steps or preempt.requested:
          save_state(mngr, state, {'wall_seconds': wall, 'images_seen': step * hp.batch_size})
    finally:
      mngr.wait_until_finished()
      mngr.close()
      report.close()
  if step < job.total_steps:  # stopped by the notice: the state of `step` is saved
    logging.warning('preempted: saved step %d in %s; rerun the same command to resume', step, workdir)
    raise preemption.Preempted()
  return state


def export_generator(
  cfg: Any,
  workdir: str | os.PathLike,
  output: str | os.PathLike,
  force: bool = False,
  step: int | None = None,
) -> epath.Path:
  """Writes the EMA generator (Gs) of ``workdir``'s latest checkpoint as a generator checkpoint."""
  cfg = parse(cfg)
  hp = cfg.optim
  g_cfg, d_cfg = gan.networks(cfg)
  template = jax.eval_shape(lambda: gan.create_train_state(g_cfg, d_cfg, hp, 0))
  template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
  mngr = checkpoint_manager(workdir, cfg.job.keep_checkpoints)
  try:
    state, info = restore_state(mngr, template, step)
  finally:
    mngr.close()
  n = int(state.step)
  meta = {
    'trained_with': 'pmsfc_jax.jobs.train_pggan (launch/train_pggan.py)',
    'network': 'EMA generator (Gs)',
    'steps': n,
    'batch_size': hp.batch_size,
    'images_seen': n * hp.batch_size,
    'wall_seconds': round(float(info.get('wall_seconds', 0.0)), 1),
    'data': f'CelebA aligned faces {cfg.data.first:06d}-{cfg.data.last:06d}.jpg (centre square '
    f'crop, {g_cfg.resolution}x{g_cfg.resolution}, random flips); CelebA terms: non-commercial '
    'research only',
    'objective': f'non-saturating logistic + lazy R1 (gamma {hp.r1_gamma}, every {hp.r1_every})',
    'optimizer': f'Adam lr {hp.lr} betas ({hp.b1}, {hp.b2})',
    'ema_half_life_kimg': hp.ema_half_life_kimg,
    'discriminator': disc.DiscriminatorConfig.to_dict(d_cfg),
  }
  return checkpoints.save_generator(output, g_cfg, state.g_ema, meta=meta, force=force)


def main(
  cfg: Any,
  workdir: str,
  export: str | None = None,
  samples: str | None = None,
  force: bool = False,
  seed: int = 0,
) -> None:
  """``launch.train_pggan``: trains in ``workdir``, or (``export``) writes its EMA generator and, with
  ``samples``, the grid of that generator for ``seed`` (16 samples, ``launch.generate`` latents)."""
  if not export:
    train(cfg, workdir)
    return
  path = export_generator(cfg, workdir, export, force=force)
  logging.info('wrote %s', path)
  print(path)
  if samples:
    write_demo_samples(checkpoints.load_generator(path), samples, seed=seed)
    print(samples)
