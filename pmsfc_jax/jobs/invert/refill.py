"""Continuous refill (issue 19): with early stop on (``job.stop_tolerance > 0``, ``core/early_stop.py``) the
batch is a set of slots, and a finished image's slot takes the next image at once.

The fixed batch shape B (one compiled program) is B slots; each holds one image at its own step. After
every jitted call the host reads which of its rows are finished (converged, or at the cap
``optim.iterations``: the one device read per call), finalises and writes those images (``results.py``,
their ``steps`` in the manifest) and refills their rows: the targets, V(targets), and a fresh state from
each new image's own key (``init_state`` over the whole batch, the new rows taken with a mask: no
recompilation). A finished image is frozen inside the step that finished it (``early_stop``), so its
result depends only on its own key and settings, not on its slot, its batch-mates, its process or when it
entered. Once the inputs run out, empty slots stay frozen (their compute is the tail's only waste).

On the global mesh (several processes in lockstep, ``core/mesh.py``) each process owns B / (process count)
of the rows (its slots), fed from its own share of the inputs: it reads the finished flags of its own rows
(``mesh.to_host``), writes its own finished images and refills its own rows; the targets, keys, masks and
states are global arrays made of every process's rows (``mesh.put_rows``). Every process must dispatch the
same programs, so after each call the processes agree once (``multihost.Processes.agree``: a few bytes)
on whether any process has finished rows (then every process runs ``finalize``), any slot is still
occupied (else the loop ends everywhere) and any process refills (then every process runs the refill); a
process whose inputs have run out keeps its rows frozen until every process is done. The preemption
notice is polled after every call at the same point on every process.

Checkpoints (``batch_state.BatchCheckpoint``): every ``job.checkpoint_every`` steps of the loop and at a
preemption notice, the state with the slots' image names (``''`` = empty; on the global mesh one global
checkpoint, ``names[i]`` the slots of process i, saved and restored by every process together). A
resumed run empties the slots of images recorded since (a kill between a write and the next checkpoint),
continues the others at their own steps and refills the rest: results equal an uninterrupted run. On the
global mesh it is resumed only when every process can resume its slots (agreed), hence only with the same
process count and batch shape; otherwise every process restarts its slots' images. ``seconds`` of an
image: its wall time in a slot divided by the number of this process's slots (its share of the devices).
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
from pmsfc_jax.io import listing
from pmsfc_jax.jobs.invert import batch_state
from pmsfc_jax.jobs.invert import context
from pmsfc_jax.jobs.invert import prefetch
from pmsfc_jax.jobs.invert import results


class Slots:
  """The host side of this process's rows: which image each holds, its decoded target and when it entered."""

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
  own_rows = job.batch_shape // job.process_count if job.procs.lockstep else job.batch_shape
  slots, dev = Slots(own_rows, job.input_size), _Device(job)
  load = prefetch.loader(job)  # the plain loop's decoding (task.align='face' included)
  resumed = _resume(job, dev, share, todo, slots, load)
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
  saved = counter
  if state is not None:
    dev.retarget(slots)
  while True:
    done = [] if state is None else dev.done(state, slots)
    free = sorted(slots.empty() + done)
    incoming = _take(job, feed, len(free))
    occupied = len(slots.items) - len(free) + len(incoming)
    # The loop's one agreement per call (module docstring): every process's [finished, occupied, refills].
    views = job.procs.agree([bool(done), occupied > 0, bool(incoming)])
    if any(v[0] for v in views):
      _record(job, slots, done, dev.finalize(state))  # before the new targets are in place
    new = free[: len(incoming)]
    for r, (it, target) in zip(new, incoming):
      slots.put(r, it, target)
    if not any(v[1] for v in views):
      break
    if state is None or any(v[2] for v in views):
      state = dev.refill(state, slots, new)
    n = job.sizer.steps(c.optim.iterations)
    state = dev.steps(state, n)
    counter += n
    job.stats['steps'] += n * occupied
    job.stats['slot_steps'] += n * len(slots.items)  # the devices' work, empty slots included
    job.report.update(n * occupied)
    if job.preempt.poll():
      job.ckpt.save(counter, state, _meta(job, slots))
      logging.warning('preempted: slot state saved after %d steps in %s', counter, job.ckpt.dir)
      raise context.Preempted()
    if c.job.checkpoint_every and counter - saved >= c.job.checkpoint_every:
      job.ckpt.save(counter, state, _meta(job, slots))
      saved = counter
  job.ckpt.discard()


class _Device:
  """The device side: targets, V(targets) and the state of the slots, laid out over the mesh (on the global
  mesh, every process's rows)."""

  def __init__(self, job: context.Job):
    self.job = job
    self.cfg = job.cfg
    self.aux = None if job.known is None else np.asarray(job.known)
    self.masks = inversion.subspace_masks(job.gen, job.masks, job.cfg)
    self.known = inversion.known_masks(self.aux, job.cfg, job.batch_shape, job.gen.config.resolution)

  def rows(self, x: np.ndarray):
    """This process's rows ``x`` of a batch, as the global (or this process's) batch array."""
    return mesh.put_rows(x, self.job.mesh, self.job.batch_shape)

  def retarget(self, slots: Slots) -> None:
    self.targets = self.rows(slots.targets)
    percep = self.job.percep if objective.uses_perceptual(self.cfg) else None
    self.x, self.tfeat = inversion.objective_target_jit(percep, self.targets, self.known, self.cfg)

  def fresh(self, targets, names: list[str]):
    """Initial states of the images ``names`` of this process's rows (``''``: any key, the row is frozen)."""
    keys = self.rows(listing.image_keys(self.cfg.seed, names))
    state = inversion.init_state(self.job.gen, None, targets, self.job.masks, self.cfg, keys, self.aux)
    return mesh.shard_batch(state, self.job.mesh)

  def merge(self, state, fresh, take: np.ndarray, empty: np.ndarray):
    """:func:`_merge` with this process's row masks ``take`` / ``empty``."""
    return mesh.shard_batch(_merge(state, fresh, self.rows(take), self.rows(empty), self.cfg), self.job.mesh)

  def refill(self, state, slots: Slots, rows: list[int]):
    """``state`` with ``rows`` restarted from their images' keys (all rows when ``state`` is None)."""
    self.retarget(slots)
    names = slots.names()
    fresh = self.fresh(self.targets, names)
    take = np.zeros(len(names), bool)
    take[rows if state is not None else slice(None)] = True
    empty = np.asarray([n == '' for n in names])
    return self.merge(state if state is not None else fresh, fresh, take, empty)

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

  def done(self, state, slots: Slots) -> list[int]:
    """This process's occupied rows that take no more steps (the call's one device read)."""
    flags = mesh.to_host(_finished(state, self.cfg))
    return [r for r, it in enumerate(slots.items) if it is not None and flags[r]]

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


def _take(job: context.Job, feed: Iterator, k: int) -> list[tuple[listing.InputItem, np.ndarray]]:
  """The next ``k`` decoded images of this process's queue (fewer at its end; decode errors recorded)."""
  out = []
  while len(out) < k:
    nxt = next(feed, None)
    if nxt is None:
      break
    (item,), (decoded,) = nxt
    if isinstance(decoded, Exception):
      results.record(job, item, status='error', error=str(decoded), seconds=0.0)
    else:
      out.append((item, decoded))
  return out


def _record(job: context.Job, slots: Slots, rows: list[int], host: dict) -> None:
  now = time.time()
  for r in rows:
    seconds = (now - slots.entered[r]) / len(slots.items)
    results.write_image(job, slots.items[r], r, host, seconds)
    job.report.update(job.cfg.optim.iterations - int(host['step'][r]))  # steps it did not need
    slots.items[r] = None


def _meta(job: context.Job, slots: Slots) -> dict:
  """The checkpoint's metadata: every process's slot names on the global mesh (all save together)."""
  return job.ckpt.meta(job.procs.agree(slots.names()), job.batch_shape, job.fingerprint, job.input_size)


def _resume(job, dev: _Device, share, todo, slots: Slots, load) -> Optional[tuple[Any, int]]:
  """(state, steps run) of the interrupted slots, with their images decoded into ``slots``; or None. On the
  global mesh every process resumes its slots, or none does (agreed before and after the restore)."""
  by_name = {it.name: it for it in share}
  view, reason = {'exists': False, 'step': None}, 'another process cannot resume its slots'
  try:
    latest = job.ckpt.latest()
    if latest is not None:
      view['exists'] = True
      counter, meta = latest
      names = job.ckpt.check_slots(meta, job.fingerprint, job.input_size, job.batch_shape, list(by_name))
      view['step'] = int(counter)
  except batch_state.Unusable as e:
    view['exists'], reason = True, str(e)
  views = job.procs.agree(view)
  state = None
  if all(v['step'] is not None for v in views) and len({v['step'] for v in views}) == 1:
    like = dev.fresh(dev.rows(slots.targets), [''] * len(names))
    try:
      state = job.ckpt.restore(counter, like, uniform_step=False)
    except batch_state.Unusable as e:
      reason = str(e)
  if not all(job.procs.agree(state is not None)):
    if any(v['exists'] for v in views):
      logging.warning(
        'slot checkpoint in %s not resumed: %s; its images restart from step 0', job.ckpt.dir, reason
      )
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
  return dev.merge(state, state, np.zeros(len(names), bool), empty), int(counter)
