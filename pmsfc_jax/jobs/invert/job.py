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

Robustness (docs/batch_inversion.md has the whole contract).
* Nothing is written before the configuration and the paths are validated (models, masks, devices and
  the input listing load first; ``--output_dir`` equal to or above ``--images`` is refused): a usage,
  config or path error is ONE line naming the flag / key / file and exit status 2.
* One writer per output folder (``output.py``, ``io/locks.py``): a second job on the same folder exits at
  once with status 75, touching nothing.
* Bad inputs (zero-byte, truncated, non-image, unreadable, too large, FIFOs / devices / sockets, folders,
  decompression bombs) produce a manifest line ``{"status": "error", "error": "<path>: <reason>"}`` and
  the job goes on; the exit status says some failed. A batch whose inversion raises marks its images
  failed the same way. Reading is bounded (``io/images.py``), listing follows each folder once
  (``io/listing.py``) and never lists the output folder.
* Every file is written atomically; the manifest line is the commit record (``manifest.py``); a result
  recorded ok but missing on disk is redone.
* SIGTERM (preemption, ``jobs/preemption.py``) is checked after every jitted call (one step on CPU, at
  most ``job.max_call_seconds`` of steps on accelerators, ``core/loops.CallSizer``), whatever the chunk
  and checkpoint settings: the batch state is saved (a batch whose steps are all done is finished and
  recorded instead) and the job exits with status 143; the next run resumes and ends equal to an
  uninterrupted run.
* Several processes (``--distributed``; ``core/mesh.py``): each takes its share of the sorted listing.
  On the global mesh (the default) they run in lockstep: every process lays its rows of each global batch
  out with ``mesh.put_rows`` and writes the results of the rows it holds (``mesh.to_host``: nothing crosses
  hosts); whether there is another batch, whether to resume a checkpoint, whether it restored, are agreed
  from every process's view (``multihost.Processes.agree``: a process with fewer images pads with rows it
  discards, as it does for an image that fails to decode); a preemption notice on any host stops every
  process after the same jitted call (``preemption.Preemption(sync=True)``). With ``job.mesh='host'`` the
  hosts are independent, each with a mesh of its devices. Either way every process checks the same
  things at start-up (one error, naming the host, ends them all) and ends with the job's overall status.
  In lockstep an exception inside a batch's optimisation is not an image failure (the same program runs
  everywhere: it means a peer or the interconnect failed): it ends the process (one line, status 1; a
  dead peer ends the others within ``job.heartbeat_timeout_s``, ``jobs/multihost.py``), and the rerun
  resumes from the batch checkpoint.
* Batch checkpoints are untrusted data (``batch_state.py``): only names are read back, mapped through the
  current listing; a checkpoint that fails any check or restore is discarded and its batch restarts.
* A changed configuration with the same output directory is refused (``fingerprint.py``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Any, Optional

import jax
import numpy as np
from absl import logging

from pmsfc_jax.core import config
from pmsfc_jax.core import early_stop
from pmsfc_jax.core import inversion
from pmsfc_jax.core import loops
from pmsfc_jax.core import mesh
from pmsfc_jax.io import listing
from pmsfc_jax.io import locks
from pmsfc_jax.io import progress
from pmsfc_jax.jobs import exit_codes
from pmsfc_jax.jobs import fit
from pmsfc_jax.jobs import multihost
from pmsfc_jax.jobs import preemption
from pmsfc_jax.jobs.invert import batch_state
from pmsfc_jax.jobs.invert import context
from pmsfc_jax.jobs.invert import fingerprint
from pmsfc_jax.jobs.invert import manifest
from pmsfc_jax.jobs.invert import output
from pmsfc_jax.jobs.invert import prefetch
from pmsfc_jax.jobs.invert import refill
from pmsfc_jax.jobs.invert import results
from pmsfc_jax.jobs.invert import summary as summary_lib
from pmsfc_jax.jobs.invert import validate


def run(cfg: Any) -> dict:
  """Runs the batch inversion job of ``cfg`` (see the module docstring); returns the summary.

  ``summary['exit_code']``: 0 all images ok, 1 some failed, 143 preempted (state saved; rerun). Raises
  ``config.ConfigError`` (usage / config / path errors, nothing written) and ``locks.FolderLocked``.
  """
  cfg = inversion.parse(cfg)
  validate.required(cfg)
  t_start = time.time()
  procs = validate.setup_process(cfg.job)
  with preemption.Preemption(sync=procs.lockstep) as preempt:
    v = procs.all_or_none(lambda: validate.validate(cfg, procs))
    payload = fingerprint.payload(cfg, v['gen'], v['masks'], v['known'])
    validate.same_everywhere(procs, v['items'], cfg, fingerprint.digest(payload))
    out, lock, digest = procs.all_or_none(lambda: output.open_folder(cfg, payload, procs))
    try:
      output.check_shared(out, digest, procs)
      m = v['mesh']
      cfg = fit.resolve_batch_size(cfg, v['gen'].config, None if v['masks'] is None else len(v['masks']), m)
      batch = min(procs.agree(cfg.job.batch_size))  # batch_size=auto: one size for the lockstep program
      if batch != cfg.job.batch_size:
        cfg = dataclasses.replace(cfg, job=dataclasses.replace(cfg.job, batch_size=batch))
      job = context.Job(
        cfg=cfg,
        out=out,
        gen=mesh.replicate(v['gen'], m),
        percep=None if v['percep'] is None else mesh.replicate(v['percep'], m),
        masks=v['masks'],
        known=v['known'],
        mesh=m,
        batch_shape=mesh.padded_size(cfg.job.batch_size, m.shape[mesh.DATA_AXIS]),
        input_size=v['size'],
        manifest=manifest.Manifest(out, procs.index, procs.count),
        ckpt=batch_state.BatchCheckpoint(out / batch_state.CHECKPOINTS, procs),
        fingerprint=digest,
        preempt=preempt,
        procs=procs,
        sizer=loops.CallSizer(
          cfg.job.steps_per_call, cfg.job.max_call_seconds, agree=procs.agree_max if procs.lockstep else None
        ),
      )
      return _work(job, v['items'], t_start)
    finally:
      lock.release()


def _work(job: context.Job, items: list[listing.InputItem], t_start: float) -> dict:
  cfg = job.cfg
  share = multihost.process_share(items, job.process_index, job.process_count)
  done = job.manifest.load_done(cfg.job.retry_failed)
  job.redo = output.forget_missing(job.manifest, done, share, job.out)
  todo = [it for it in share if it.name not in done or it.name in job.redo]
  n, scope = job.mesh.shape[mesh.DATA_AXIS], 'global' if job.procs.lockstep else 'local'
  logging.info(
    'process %d/%d: %d inputs listed, %d in this share, %d already done, %d to do; %s mesh of %d device(s), '
    'batch shape %d', job.process_index, job.process_count, len(items), len(share), len(share) - len(todo),
    len(todo), scope, n, job.batch_shape
  )  # fmt: skip
  groups, resume = ([], None) if early_stop.enabled(cfg) else _plan(job, todo, share)
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
    if early_stop.enabled(cfg):
      refill.run(job, todo, share)  # slots refilled as images stop (early stop)
    else:
      _loop(job, groups, resume)
  except context.Preempted:
    preempted = True
  finally:
    job.report.close()
    job.ckpt.close()

  # Every process ends with the job's status: preempted if any process was (its images are pending).
  views = job.procs.gather([preempted, int(job.stats['steps'])])
  any_preempted = any(p for p, _ in views)
  summary = None
  if job.process_index == 0:
    wall = time.time() - t_start
    summary = summary_lib.write_summary(job.out, items, wall, job, any_preempted, sum(s for _, s in views))
  multihost.barrier('pmsfc_summary_written')
  if summary is None:
    summary = json.loads((job.out / summary_lib.SUMMARY).read_text())
  summary = dict(summary)
  own = {k: int(v) for k, v in job.stats.items()}
  summary['this_process'] = dict(own, process_index=job.process_index, preempted=preempted)
  summary['exit_code'] = (
    exit_codes.PREEMPTED
    if any_preempted
    else exit_codes.SOME_FAILED
    if summary['failed'] or summary['pending']
    else exit_codes.OK
  )
  return summary


def main(cfg: Any) -> int:
  """``launch.invert``: runs the job, prints the summary table; returns the exit status
  (``jobs/exit_codes.py``; usage / config / path errors and a locked folder print one line)."""
  try:
    cfg = inversion.parse(cfg)
    summary = run(cfg)
  except locks.FolderLocked as e:
    print(f'error: {e}', file=sys.stderr)
    return exit_codes.LOCKED
  except config.ConfigError as e:  # ConfigMismatchError included
    print(f'error: {e}', file=sys.stderr)
    return exit_codes.USAGE
  except jax.errors.JaxRuntimeError as e:
    if not cfg.job.distributed:
      raise
    print(f'error: {multihost.failed_with_peers(e)}', file=sys.stderr)
    return exit_codes.SOME_FAILED
  print(summary_lib.format_summary(cfg.job.output_dir, summary))
  return summary['exit_code']


def _plan(
  job: context.Job, todo: list[listing.InputItem], share: list[listing.InputItem]
) -> tuple[list[list[listing.InputItem]], Optional[tuple]]:
  """Batches of the to-do list (in lockstep: this process's rows of each global batch); the interrupted
  batch goes first if its checkpoint is usable, for every process (agreed). The checkpoint's names are
  mapped through the current listing (``batch_state.check_meta``)."""
  b = job.batch_shape // job.process_count if job.procs.lockstep else job.cfg.job.batch_size
  view, reason, names = {'exists': False, 'step': None, 'wanted': False}, None, []
  try:
    latest = job.ckpt.latest()
    if latest is not None:
      view.update(exists=True)
      step, meta = latest
      names = job.ckpt.check(
        meta,
        step,
        job.cfg.optim.iterations,
        job.fingerprint,
        job.input_size,
        job.mesh.shape[mesh.DATA_AXIS],
        job.batch_shape,
        [it.name for it in share],
      )
      todo_names = {it.name for it in todo}
      view.update(step=int(step), wanted=any(n in todo_names for n in names))
  except batch_state.Unusable as e:
    view.update(exists=True)
    reason = str(e)
  views = job.procs.agree(view)
  usable = all(v['step'] is not None for v in views) and len({v['step'] for v in views}) == 1
  if usable and any(v['wanted'] for v in views):
    logging.info('resuming a batch of %d images from step %d', len(names), step)
    by_name = {it.name: it for it in share}
    resumed = set(names)
    rest = [it for it in todo if it.name not in resumed]
    resume = (step, meta, names)
    return [[by_name[n] for n in names]] + [rest[i : i + b] for i in range(0, len(rest), b)], resume
  if any(v['exists'] for v in views):
    if not usable:
      logging.warning(
        'batch checkpoint in %s not resumed: %s; its images restart from step 0',
        job.ckpt.dir,
        reason or 'another process cannot resume its part',
      )
    job.ckpt.discard()  # unusable, or its images are all recorded
  return [todo[i : i + b] for i in range(0, len(todo), b)], None


def _loop(job: context.Job, groups: list[list[listing.InputItem]], resume: Optional[tuple]) -> None:
  c = job.cfg
  load = prefetch.loader(job)
  n_done = 0
  stop = lambda: job.preempt.requested
  batches = prefetch.Prefetcher(groups, load, c.job.num_workers, c.job.prefetch_batches, stop)
  # In lockstep every process runs as many batches as the process with the most (empty ones: padding).
  for gi, (group, decoded) in enumerate(job.procs.while_any(batches, ([], []))):
    if job.preempt.poll():
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
  done_names = set(job.manifest.load_done().keys()) - job.redo if resume is not None else set()
  ok_items, arrays = [], []
  for it, d in zip(group, decoded):
    if isinstance(d, Exception):
      if it.name not in done_names:
        results.record(job, it, status='error', error=str(d), seconds=0.0)
      continue
    ok_items.append(it)
    arrays.append(d)
  own = [it.name for it in ok_items]
  views = job.procs.agree([own, resume is None or own == resume[2]])  # lockstep: every process's rows
  names = [v[0] for v in views]
  if not any(names):
    return
  if resume is not None and not all(same for _, same in views):
    logging.warning('inputs of the interrupted batch changed: restarting it from step 0')
    job.ckpt.discard()
    resume = None
  size = job.input_size
  try:
    host = _optimise(
      job, ok_items, np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.float32), resume, names
    )
  except Exception as e:  # pylint: disable=broad-except
    if job.procs.lockstep:  # on a pod: a peer or the interconnect failed, not these images (module doc)
      raise
    logging.exception('batch of %d images failed', len(ok_items))
    for it in ok_items:
      if it.name not in done_names:
        results.record(
          job, it, status='error', seconds=0.0, error=f'{it.path}: inversion failed ({type(e).__name__}: {e})'
        )
    job.ckpt.discard()
    return
  seconds = (time.time() - t0) / max(1, len(ok_items))
  for j, it in enumerate(ok_items):
    if it.name not in done_names:
      results.write_image(job, it, j, host, seconds)
  job.ckpt.discard()


def _optimise(
  job: context.Job,
  items: list[listing.InputItem],
  arrays: np.ndarray,
  resume: Optional[tuple],
  names: list[list[str]],
) -> dict:
  """init_state / run_steps (checkpoints every ``checkpoint_every`` steps; the preemption notice checked
  after every jitted call) / finalize of one batch -> the host results of this process's rows
  (``names[i]``: the images of process i's rows; only ``names[0]`` unless in lockstep)."""
  c = job.cfg
  n = len(items)
  batch_shape = resume[1]['batch_shape'] if resume is not None else job.batch_shape
  targets = mesh.put_rows(arrays, job.mesh, batch_shape)
  keys = mesh.put_rows(listing.image_keys(c.seed, [it.name for it in items]), job.mesh, batch_shape)
  aux = None if job.known is None else np.asarray(job.known)
  # init_state's key-independent leaves (weights, optimizer state, step, history) come out replicated;
  # laying the whole state out over 'data' keeps every device on its own images only (otherwise XLA
  # recomputes the replicated parts of the batch on every device).
  state = mesh.shard_batch(
    inversion.init_state(job.gen, job.percep, targets, job.masks, c, keys, aux), job.mesh
  )
  meta = job.ckpt.meta(names, batch_shape, job.fingerprint, job.input_size)
  step = 0
  if resume is not None:
    restored, reason = None, 'another process cannot restore its part'
    try:
      restored = job.ckpt.restore(int(resume[0]), state)
    except batch_state.Unusable as e:
      reason = str(e)
    if all(job.procs.agree(restored is not None)):
      state = mesh.shard_batch(restored, job.mesh)
      step = int(resume[0])
    else:
      logging.warning(
        'batch checkpoint in %s not resumed: %s; the batch restarts from step 0', job.ckpt.dir, reason
      )
      job.ckpt.discard()
  iters, every, chunk = c.optim.iterations, c.job.checkpoint_every, c.job.chunk_size
  ran, inflight = [0], loops.InFlight()

  def on_steps(k: int, st) -> bool:
    ran[0] += k
    job.report.update(k * n, wait_for=st.step)
    inflight.add(st.step)  # the notice then waits for two calls at most, not for every queued one
    return job.preempt.poll()

  while step < iters:
    nsteps = min(iters - step, chunk or iters, (every - step % every) if every else iters)
    before = ran[0]
    state = inversion.run_steps(
      job.gen, job.percep, state, targets, job.masks, c, nsteps, aux, on_steps, job.sizer
    )
    step += ran[0] - before
    job.stats['steps'] += (ran[0] - before) * n
    rows = batch_shape // job.process_count if job.procs.lockstep else batch_shape  # this process's rows
    job.stats['slot_steps'] += (ran[0] - before) * rows  # the device's work, padding included
    if job.preempt.requested and step < iters:
      job.ckpt.save(step, state, meta)
      logging.warning('preempted: batch state saved at step %d/%d in %s', step, iters, job.ckpt.dir)
      raise context.Preempted()
    if every and step % every == 0 and step < iters:
      job.ckpt.save(step, state, meta)
  # All steps done (also when the notice came during the last call): finish and record the batch.
  result = inversion.finalize(job.gen, state, targets, job.masks, c, aux)
  return results.host_results(job, result, targets)
