"""The batch inversion job (``launch.invert``): thousands of images, sharded over devices and hosts,
resumable.

``run(cfg)`` lists the inputs (``io/listing.py``), decodes them in a background thread pool
(``prefetch.py``), lays every batch out over a device mesh (``core/mesh.py``), runs
``inversion.init_state`` / ``run_steps`` (in chunks, with orbax checkpoints of the optimisation state
between them, ``batch_state.py``, and a progress line after every jitted call when due) / ``finalize``,
and writes per image ``OUT/<stem>.png`` (the task result), ``OUT/<stem>.npz`` (codes, weights, subspace
masks, loss history, key, config) and one line of ``OUT/manifest.jsonl`` (``results.py``,
``manifest.py``); at the end ``OUT/summary.json`` (``summary.py``).

Image size rule: every input goes through ``images.decode`` (EXIF transpose, alpha on white, centre crop
or pad to a square by ``task.crop``, Lanczos/bicubic resize) to the generator's resolution ``R``; for
``task.name='super_resolve'`` the input is the *low-resolution* image and is brought to ``R // factor``
(the factor must divide ``R``; e.g. a 1024 generator with factor 16 takes 64x64 inputs).

Robustness.
* Bad inputs (zero-byte, truncated, non-image, unreadable, decompression bombs) produce a manifest line
  ``{"status": "error", "error": "<path>: <reason>"}`` and the job goes on; the exit status says some
  failed. A batch whose inversion raises marks its images failed the same way.
* Every file is written atomically; the manifest line is the commit record (``manifest.py``).
* SIGTERM (preemption, ``jobs/preemption.py``) is checked after every chunk: the state is saved, the job
  exits with status 143 and the next run resumes. Multi-host: each process handles its own SIGTERM
  (hosts are independent, see ``core/mesh.py``) and still joins the final barrier.
* A changed configuration with the same output directory is refused (``fingerprint.py``).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Optional

import numpy as np
from absl import logging
from etils import epath

from pmsfc_jax.core import config
from pmsfc_jax.core import inversion
from pmsfc_jax.core import mesh
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import files
from pmsfc_jax.io import images
from pmsfc_jax.io import listing
from pmsfc_jax.io import masks as masks_lib
from pmsfc_jax.io import pretrained
from pmsfc_jax.io import progress
from pmsfc_jax.io import subspaces
from pmsfc_jax.jobs import exit_codes
from pmsfc_jax.jobs import fit
from pmsfc_jax.jobs import multihost
from pmsfc_jax.jobs import preemption
from pmsfc_jax.jobs.invert import batch_state
from pmsfc_jax.jobs.invert import context
from pmsfc_jax.jobs.invert import fingerprint
from pmsfc_jax.jobs.invert import manifest
from pmsfc_jax.jobs.invert import prefetch
from pmsfc_jax.jobs.invert import results
from pmsfc_jax.jobs.invert import summary as summary_lib

ConfigMismatchError = fingerprint.ConfigMismatchError


def _required(cfg: config.InvertConfig) -> None:
  for flag, value in (
    ('--images', cfg.job.images),
    ('--output_dir', cfg.job.output_dir),
    ('--generator', cfg.model.generator),
  ):
    if not value:
      raise config.ConfigError(f'{flag} is required')
  if cfg.method.name == 'pmsfc' and not cfg.model.subspaces:
    raise config.ConfigError(
      '--method=pmsfc needs --subspaces (a launch.discover output or a shipped name); '
      '--method=mganprior needs none'
    )
  if cfg.task.name == 'inpaint' and not cfg.task.mask:
    raise config.ConfigError('--task=inpaint needs --mask=PNG (white = hole)')


def _subspace_masks(cfg: config.InvertConfig) -> Optional[np.ndarray]:
  if cfg.method.name != 'pmsfc':
    return None
  sub = subspaces.load_subspaces(cfg.model.subspaces)
  if sub.layer != cfg.model.layer:
    raise ValueError(
      f'--subspaces={cfg.model.subspaces!r} were discovered at layer {sub.layer} but '
      f'config.model.layer={cfg.model.layer}'
    )
  return np.asarray(sub.masks, bool)


def _setup_process(job: config.Job) -> tuple[int, int]:
  if not job.distributed:
    return 0, 1
  return multihost.initialize(
    job.coordinator_address or None, job.num_processes or None, None if job.process_id < 0 else job.process_id
  )


def _clean_stale(out: epath.Path) -> None:
  """Removes leftovers of killed runs: temporary result files and half-deleted checkpoint folders."""
  for p in out.glob('.*'):
    if files.TMP_MARKER in p.name and not p.is_dir():
      p.unlink()
  for root in (out, out / batch_state.CHECKPOINTS):
    if root.exists():
      for p in root.glob(f'{files.TRASH_PREFIX}*'):
        p.rmtree() if p.is_dir() else p.unlink()


def _open(cfg: config.InvertConfig, process_index: int, process_count: int) -> context.Job:
  """Loads the models, checks the output folder's configuration and sets up the mesh."""
  out = epath.Path(cfg.job.output_dir)
  out.mkdir(parents=True, exist_ok=True)
  gen = checkpoints.load_generator(cfg.model.generator)
  size = inversion.input_size(gen, cfg)
  masks = _subspace_masks(cfg)
  known = None
  if cfg.task.name == 'inpaint':
    known = masks_lib.load_inpainting_mask(
      cfg.task.mask, size=gen.config.resolution, threshold=cfg.task.mask_threshold
    )
  percep = pretrained.load_perceptual(cfg.loss.perceptual) if cfg.loss.perceptual_weight != 0 else None
  payload = fingerprint.payload(cfg, gen, masks, known)
  if process_index == 0:
    _clean_stale(out)
  # Every process checks (so a mismatch fails all of them, none waits at the barrier); process 0 writes.
  digest = fingerprint.check(
    out,
    payload,
    cfg.job.overwrite_config,
    process_index == 0,
    remove=[*out.glob('manifest*.jsonl'), out / summary_lib.SUMMARY, out / batch_state.CHECKPOINTS],
  )
  multihost.barrier('pmsfc_config_checked')
  m = mesh.make_mesh(cfg.job.num_devices or None)
  cfg = fit.resolve_batch_size(cfg, gen.config, None if masks is None else len(masks), m)  # 0 = auto
  return context.Job(
    cfg=cfg,
    out=out,
    gen=mesh.replicate(gen, m),
    percep=None if percep is None else mesh.replicate(percep, m),
    masks=masks,
    known=known,
    mesh=m,
    batch_shape=mesh.padded_size(cfg.job.batch_size, m.shape[mesh.DATA_AXIS]),
    input_size=size,
    manifest=manifest.Manifest(out, process_index, process_count),
    ckpt=batch_state.BatchCheckpoint(out / batch_state.CHECKPOINTS, process_index, process_count),
    fingerprint=digest,
    preempt=preemption.Preemption(),
    process_index=process_index,
    process_count=process_count,
  )


def run(cfg: Any) -> dict:
  """Runs the batch inversion job of ``cfg`` (see the module docstring); returns the summary.

  ``summary['exit_code']``: 0 all images ok, 1 some failed, 143 preempted (state saved; rerun).
  """
  cfg = inversion.parse(cfg)
  _required(cfg)
  t_start = time.time()
  process_index, process_count = _setup_process(cfg.job)
  job = _open(cfg, process_index, process_count)
  items = listing.list_inputs(cfg.job.images, exclude=cfg.job.output_dir)
  share = multihost.process_share(items, process_index, process_count)
  done = job.manifest.load_done(cfg.job.retry_failed)
  todo = [it for it in share if it.name not in done]
  logging.info(
    'process %d/%d: %d inputs listed, %d in this share, %d already done, %d to do; '
    '%d device(s), batch shape %d',
    process_index,
    process_count,
    len(items),
    len(share),
    len(share) - len(todo),
    len(todo),
    job.mesh.shape[mesh.DATA_AXIS],
    job.batch_shape,
  )

  groups, resume = _plan(job, todo, {it.name for it in share})
  preempted = False
  iters = cfg.optim.iterations
  job.report = progress.Progress(
    len(todo) * iters,
    'inversion',
    'images*steps',
    cfg.job.log_every_s,
    done=0 if resume is None else resume[0] * len(groups[0]),
  )
  try:
    with job.preempt:
      _loop(job, groups, resume)
  except context.Preempted:
    preempted = True
  finally:
    job.report.close()
    job.ckpt.close()

  multihost.barrier('pmsfc_all_done')
  summary = None
  if process_index == 0:
    summary = summary_lib.write_summary(job.out, items, time.time() - t_start, job, preempted)
  multihost.barrier('pmsfc_summary_written')
  if summary is None:
    summary = json.loads((job.out / summary_lib.SUMMARY).read_text())
  summary = dict(summary)
  own = {k: int(v) for k, v in job.stats.items()}
  summary['this_process'] = dict(own, process_index=process_index, preempted=preempted)
  summary['exit_code'] = (
    exit_codes.PREEMPTED
    if preempted
    else exit_codes.SOME_FAILED
    if summary['failed'] or summary['pending']
    else exit_codes.OK
  )
  return summary


def main(cfg: Any) -> int:
  """``launch.invert``: runs the job, prints the summary table; returns the exit status."""
  cfg = inversion.parse(cfg)
  try:
    summary = run(cfg)
  except ConfigMismatchError as e:
    logging.error('%s', e)
    print(f'error: {e}', file=sys.stderr)
    return exit_codes.CONFIG_MISMATCH
  print(summary_lib.format_summary(cfg.job.output_dir, summary))
  return summary['exit_code']


def _plan(
  job: context.Job, todo: list[listing.InputItem], share_names: set[str]
) -> tuple[list[list[listing.InputItem]], Optional[tuple]]:
  """Batches of the to-do list; the interrupted batch (if its checkpoint is usable) goes first."""
  ndev = job.mesh.shape[mesh.DATA_AXIS]
  b = job.cfg.job.batch_size
  latest = job.ckpt.latest()
  if latest is not None:
    step, meta = latest
    ckpt_items = [listing.InputItem(**d) for d in meta.get('items', [])]
    todo_names = {it.name for it in todo}
    if meta.get('fingerprint') != job.fingerprint:
      logging.warning('batch checkpoint of another configuration: discarding it')
      job.ckpt.discard()
    elif not any(it.name in todo_names for it in ckpt_items):
      job.ckpt.discard()
    elif not all(it.name in share_names for it in ckpt_items):
      logging.warning(
        "the interrupted batch is no longer in this process's share (process count or "
        'input list changed): restarting its images from step 0 where they belong'
      )
      job.ckpt.discard()
    elif meta.get('batch_shape', 0) % ndev or meta.get('input_size') != job.input_size:
      logging.warning(
        'batch checkpoint has batch shape %s, not divisible over %d devices: restarting that batch',
        meta.get('batch_shape'),
        ndev,
      )
      job.ckpt.discard()
    else:
      first_names = {i.name for i in ckpt_items}
      rest = [it for it in todo if it.name not in first_names]
      logging.info('resuming a batch of %d images from step %d', len(ckpt_items), step)
      return [ckpt_items] + [rest[i : i + b] for i in range(0, len(rest), b)], (step, meta)
  return [todo[i : i + b] for i in range(0, len(todo), b)], None


def _loop(job: context.Job, groups: list[list[listing.InputItem]], resume: Optional[tuple]) -> None:
  c = job.cfg
  load = lambda it: images.load_image(it.path, size=job.input_size, crop=c.task.crop)
  n_done = 0
  for gi, (group, decoded) in enumerate(
    prefetch.Prefetcher(groups, load, c.job.num_workers, c.job.prefetch_batches)
  ):
    if job.preempt.requested:
      raise context.Preempted()
    run_batch(job, group, decoded, resume if gi == 0 else None)
    n_done += len(group)
    job.report.update(
      n_done * c.optim.iterations - job.report.done,
      info=f'images {n_done}/{sum(map(len, groups))} (ok {job.stats["ok"]}, failed {job.stats["failed"]})',
    )


def run_batch(
  job: context.Job, group: list[listing.InputItem], decoded: list[Any], resume: Optional[tuple]
) -> None:
  """Optimises one batch and records its results (``resume``: (step, meta) of its checkpoint)."""
  t0 = time.time()
  done_names = set(job.manifest.load_done().keys()) if resume is not None else set()
  ok_items, arrays = [], []
  for it, d in zip(group, decoded):
    if isinstance(d, Exception):
      if it.name not in done_names:
        results.record(job, it, status='error', error=str(d), seconds=0.0)
      continue
    ok_items.append(it)
    arrays.append(d)
  if not ok_items:
    return
  if resume is not None and [it.name for it in ok_items] != [d['name'] for d in resume[1]['items']]:
    logging.warning('inputs of the interrupted batch changed: restarting it from step 0')
    job.ckpt.discard()
    resume = None
  try:
    host = _optimise(job, ok_items, np.stack(arrays), resume)
  except context.Preempted:
    raise
  except Exception as e:  # pylint: disable=broad-except
    logging.exception('batch of %d images failed', len(ok_items))
    for it in ok_items:
      if it.name not in done_names:
        results.record(
          job, it, status='error', seconds=0.0, error=f'{it.path}: inversion failed ({type(e).__name__}: {e})'
        )
    job.ckpt.discard()
    return
  seconds = (time.time() - t0) / len(ok_items)
  for j, it in enumerate(ok_items):
    if it.name not in done_names:
      results.write_image(job, it, j, host, seconds)
  job.ckpt.discard()


def _optimise(
  job: context.Job, items: list[listing.InputItem], arrays: np.ndarray, resume: Optional[tuple]
) -> dict:
  """init_state / run_steps in checkpointed chunks / finalize of one batch -> host results."""
  c = job.cfg
  n = len(items)
  batch_shape = resume[1]['batch_shape'] if resume is not None else job.batch_shape
  targets = mesh.shard_batch(mesh.pad_batch(arrays, batch_shape), job.mesh)
  keys = mesh.shard_batch(
    mesh.pad_batch(listing.image_keys(c.seed, [it.name for it in items]), batch_shape), job.mesh
  )
  aux = None if job.known is None else np.asarray(job.known)
  # init_state's key-independent leaves (weights, optimizer state, step, history) come out replicated;
  # laying the whole state out over 'data' keeps every device on its own images only (otherwise XLA
  # recomputes the replicated parts of the batch on every device).
  state = mesh.shard_batch(
    inversion.init_state(job.gen, job.percep, targets, job.masks, c, keys, aux), job.mesh
  )
  meta = {
    'items': [it.to_dict() for it in items],
    'batch_shape': batch_shape,
    'fingerprint': job.fingerprint,
    'input_size': job.input_size,
  }
  step = 0
  if resume is not None:
    step = int(resume[0])
    state = mesh.shard_batch(job.ckpt.restore(step, state), job.mesh)
  iters, every = c.optim.iterations, c.job.checkpoint_every
  chunk = max(1, min(c.job.chunk_size or iters, every or iters, iters or 1))
  on_steps = lambda k, st: job.report.update(k * n, wait_for=st.step)
  while step < iters:
    nsteps = min(chunk, iters - step)
    if every:
      nsteps = min(nsteps, every - step % every)
    state = inversion.run_steps(job.gen, job.percep, state, targets, job.masks, c, nsteps, aux, on_steps)
    step += nsteps
    job.stats['steps'] += nsteps * n
    if job.preempt.requested:
      if step < iters:
        job.ckpt.save(step, state, meta)
        logging.warning('preempted: batch state saved at step %d/%d in %s', step, iters, job.ckpt.dir)
      raise context.Preempted()
    if every and step % every == 0 and step < iters:
      job.ckpt.save(step, state, meta)
  result = inversion.finalize(job.gen, state, targets, job.masks, c, aux)
  return results.host_results(job, result, targets)
