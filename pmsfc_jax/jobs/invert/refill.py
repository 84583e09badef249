"""Continuous refill (issue 19): with early stop on (``job.stop_tolerance > 0``, ``core/early_stop.py``) the
batch is a set of slots, and a finished image's slot takes the next image at once.

The fixed batch shape B (one compiled program) is B slots; each holds one image at its own step. After
every jitted call the host reads which rows are finished (converged, or at the cap ``optim.iterations``: a
(B,) bool, the one device read per call), finalises and writes those images (``results.py``, their
``steps`` in the manifest) and refills their rows: the targets, V(targets), and a fresh state from each
new image's own key (``init_state`` over the whole batch, the new rows taken with a mask: no
recompilation). A finished image is frozen inside the step that finished it (``early_stop``), so its
result depends only on its own key and settings, not on its slot, its batch-mates or when it entered. Once
the inputs run out, empty slots stay frozen (their compute is the tail's only waste).

Checkpoints (``batch_state.BatchCheckpoint``): every ``job.checkpoint_every`` steps of the loop and at a
preemption notice, the state with the slots' image names (``''`` = empty). A resumed run empties the slots
of images recorded since (a kill between a write and the next checkpoint), continues the others at their
own steps and refills the rest: results equal an uninterrupted run. ``seconds`` of an image: its wall time
in a slot divided by the number of slots (its share of the device).
"""

from __future__ import annotations

import functools
import time
from typing import Any, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from pmsfc_jax.core import early_stop
from pmsfc_jax.core import inversion
from pmsfc_jax.core import loops
from pmsfc_jax.core import mesh
from pmsfc_jax.core import objective
from pmsfc_jax.io import images
from pmsfc_jax.io import listing
from pmsfc_jax.jobs.invert import batch_state
from pmsfc_jax.jobs.invert import context
from pmsfc_jax.jobs.invert import prefetch
from pmsfc_jax.jobs.invert import results


class Slots:
  """The host side of the batch: which image each row holds, its decoded target and when it entered."""

  def __init__(self, size: int, input_size: int):
    self.items: list[Optional[listing.InputItem]] = [None] * size
    self.targets = np.zeros((size, input_size, input_size, 3), np.float32)
    self.entered = [0.0] * size

  def empty(self) -> list[int]:
    return [r for r, it in enumerate(self.items) if it is None]

  def names(self) -> list[str]:
    return [it.name if it is not None else '' for it in self.items]

  def put(self, row: int, item: listing.InputItem, target: np.ndarray) -> None:
    self.items[row], self.targets[row], self.entered[row] = item, target, time.time()


def run(job: context.Job, todo: list[listing.InputItem], share: list[listing.InputItem]) -> None:
  """Inverts ``todo`` through the slots until every image is recorded (or raises ``Preempted``)."""
  c = job.cfg
  slots = Slots(job.batch_shape, job.input_size)
  load = lambda it: images.load_image(
    it.path, size=job.input_size, crop=c.task.crop, max_bytes=c.job.max_input_bytes
  )
  resumed = _resume(job, share, todo, slots, load)
  queue = [it for it in todo if it.name not in set(slots.names())]
  feed = iter(
    prefetch.Prefetcher(
      [[it] for it in queue],
      load,
      c.job.num_workers,
      c.job.prefetch_batches * job.batch_shape,
      lambda: job.preempt.requested,  # not poll(): a sync point only where every process polls
    )
  )
  state, counter = (None, 0) if resumed is None else resumed
  saved, run = counter, _Device(job)
  if state is not None:
    state = mesh.shard_batch(state, job.mesh)
    run.retarget(slots)
  while True:
    new = _fill(job, slots, feed)
    if all(it is None for it in slots.items):
      break
    if new or state is None:
      state = run.refill(state, slots, new)
    n = job.sizer.steps(c.optim.iterations)
    state = run.steps(state, n)
    counter += n
    finished = np.asarray(jax.device_get(run.finished(state)))
    occupied = sum(it is not None for it in slots.items)
    job.stats['steps'] += n * occupied
    job.stats['slot_steps'] += n * len(slots.items)  # the device's work, empty slots included
    job.report.update(n * occupied)
    rows = [r for r in range(len(slots.items)) if finished[r] and slots.items[r] is not None]
    if rows:
      _record(job, slots, rows, run.finalize(state))
    if job.preempt.poll():
      job.ckpt.save(counter, state, _meta(job, slots))
      logging.warning('preempted: slot state saved after %d steps in %s', counter, job.ckpt.dir)
      raise context.Preempted()
    if c.job.checkpoint_every and counter - saved >= c.job.checkpoint_every:
      job.ckpt.save(counter, state, _meta(job, slots))
      saved = counter
  job.ckpt.discard()


class _Device:
  """The device side: targets, V(targets) and the state of the slots, laid out over the mesh."""

  def __init__(self, job: context.Job):
    self.job = job
    self.cfg = job.cfg
    self.aux = None if job.known is None else np.asarray(job.known)
    self.masks = inversion.subspace_masks(job.gen, job.masks, job.cfg)
    self.known = inversion.known_masks(self.aux, job.cfg, job.batch_shape, job.gen.config.resolution)

  def retarget(self, slots: Slots) -> None:
    self.targets = mesh.shard_batch(slots.targets, self.job.mesh)
    percep = self.job.percep if objective.uses_perceptual(self.cfg) else None
    self.x, self.tfeat = inversion.objective_target_jit(percep, self.targets, self.known, self.cfg)

  def refill(self, state, slots: Slots, rows: list[int]):
    """``state`` with ``rows`` restarted from their images' keys (all rows when ``state`` is None)."""
    self.retarget(slots)
    held = [n for n in slots.names() if n]
    names = [n or held[0] for n in slots.names()]  # empty rows: any key (they are frozen)
    keys = mesh.shard_batch(listing.image_keys(self.cfg.seed, names), self.job.mesh)
    fresh = inversion.init_state(self.job.gen, None, self.targets, self.job.masks, self.cfg, keys, self.aux)
    take = np.zeros(len(names), bool)
    take[rows if state is not None else slice(None)] = True
    empty = np.asarray([n == '' for n in slots.names()])
    return mesh.shard_batch(
      _merge(state if state is not None else fresh, fresh, take, empty, self.cfg), self.job.mesh
    )

  def steps(self, state, n: int):
    percep = self.job.percep if objective.uses_perceptual(self.cfg) else None
    return loops.timed_call(
      self.job.sizer,
      n,
      inversion.run_steps_jit,
      self.job.gen,
      percep,
      state,
      self.x,
      self.tfeat,
      masks=self.masks,
      known=self.known,
      cfg=self.cfg,
      num_steps=n,
    )

  def finished(self, state):
    return _finished(state, self.cfg)

  def finalize(self, state) -> dict:
    result = inversion.finalize(self.job.gen, state, self.targets, self.job.masks, self.cfg, self.aux)
    return results.host_results(self.job, result, self.targets)


@functools.partial(jax.jit, static_argnums=(4,))
def _merge(state, fresh, take, empty, cfg):
  """Rows ``take`` from ``fresh``, the others from ``state``; ``empty`` rows frozen at the cap."""
  pick = lambda new, old: jnp.where(take.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
  out = jax.tree.map(pick, fresh, state)
  return out.replace(step=jnp.where(empty, cfg.optim.iterations, out.step))


@functools.partial(jax.jit, static_argnums=(1,))
def _finished(state, cfg):
  return ~jax.vmap(lambda h, s: early_stop.active(h, s, cfg))(state.loss_history, state.step)


def _fill(job: context.Job, slots: Slots, feed: Iterator) -> list[int]:
  """Puts the next images into the empty slots (decode errors recorded as they come); the rows filled."""
  filled = []
  for row in slots.empty():
    for group, decoded in feed:
      if isinstance(decoded[0], Exception):
        results.record(job, group[0], status='error', error=str(decoded[0]), seconds=0.0)
        continue
      slots.put(row, group[0], decoded[0])
      filled.append(row)
      break
    else:
      break
  return filled


def _record(job: context.Job, slots: Slots, rows: list[int], host: dict) -> None:
  now = time.time()
  for r in rows:
    seconds = (now - slots.entered[r]) / len(slots.items)
    results.write_image(job, slots.items[r], r, host, seconds)
    job.report.update(job.cfg.optim.iterations - int(host['step'][r]))  # steps it did not need
    slots.items[r] = None


def _meta(job: context.Job, slots: Slots) -> dict:
  return batch_state.batch_meta(slots.names(), job.batch_shape, job.fingerprint, job.input_size)


def _resume(job, share, todo, slots: Slots, load) -> Optional[tuple[Any, int]]:
  """(state, steps run) of the interrupted slots, with their images decoded into ``slots``; or None."""
  by_name = {it.name: it for it in share}
  try:
    latest = job.ckpt.latest()
    if latest is None:
      return None
    counter, meta = latest
    names = batch_state.check_slots(meta, job.fingerprint, job.input_size, job.batch_shape, list(by_name))
    zero_keys = np.zeros((len(names), 2), np.uint32)
    like = inversion.init_state(job.gen, None, slots.targets, job.masks, job.cfg, zero_keys, job.known)
    state = job.ckpt.restore(counter, like, uniform_step=False)
  except batch_state.Unusable as e:
    logging.warning('slot checkpoint in %s not resumed: %s; its images restart from step 0', job.ckpt.dir, e)
    job.ckpt.discard()
    return None
  todo_names = {it.name for it in todo}
  empty = np.zeros(len(names), bool)
  for r, name in enumerate(names):
    if name not in todo_names:  # empty, or recorded after the checkpoint
      empty[r] = True
      continue
    try:
      slots.put(r, by_name[name], load(by_name[name]))
    except Exception:  # pylint: disable=broad-except
      empty[r] = True  # unreadable now: it goes through the queue again and is recorded there
  logging.info('resuming %d slots after %d steps', int((~empty).sum()), counter)
  return _merge(state, state, np.zeros(len(names), bool), empty, job.cfg), int(counter)
