"""Background decoding: the images of the next batches decode (and, with ``task.align='face'``, are
aligned) while the current batch optimises."""

from __future__ import annotations

import collections
import concurrent.futures
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from pmsfc_jax.core import config
from pmsfc_jax.io import faces
from pmsfc_jax.io import images
from pmsfc_jax.io import listing
from pmsfc_jax.jobs import preemption
from pmsfc_jax.jobs.invert import context


def loader(job: context.Job) -> Callable[[listing.InputItem], np.ndarray]:
  """The job's decoding step: ``images.load_image`` (crop / pad, resize), or with ``task.align='face'``
  ``faces.load_aligned`` (its record kept in ``job.alignments`` for ``results.py``; no face found is the
  image's error)."""
  c = job.cfg
  if c.task.align == 'none':
    return lambda it: images.load_image(
      it.path, size=job.input_size, crop=c.task.crop, max_bytes=c.job.max_input_bytes
    )
  template = config.align_template(c)

  def load(it: listing.InputItem) -> np.ndarray:
    arr, rec = faces.load_aligned(it.path, job.input_size, template, c.job.max_input_bytes)
    job.alignments[it.name] = rec
    return arr

  return load


class Prefetcher:
  """Decodes the images of upcoming batches in a thread pool while the current batch optimises.

  Yields ``(group, decoded)`` in order, ``decoded[j]`` an array or the ``ImageDecodeError`` of
  ``group[j]``. At most ``prefetch_batches`` batches beyond the current one are in flight.
  (Pillow's decoders release the GIL; a thread pool keeps the job's resume order under our control,
  which grain's sampler would own.)
  """

  def __init__(
    self,
    groups: Sequence[Sequence[listing.InputItem]],
    load: Callable[[listing.InputItem], np.ndarray],
    num_workers: int = 4,
    prefetch_batches: int = 2,
    stop: Optional[Callable[[], bool]] = None,
  ):
    self.groups = list(groups)
    self.load = load
    self.stop = stop
    self.ahead = max(0, int(prefetch_batches))
    self.pool = concurrent.futures.ThreadPoolExecutor(max(1, int(num_workers)), 'pmsfc-decode')

  def _safe_load(self, item: listing.InputItem):
    try:
      return self.load(item)
    except images.ImageDecodeError as e:
      return e
    except Exception as e:  # pylint: disable=broad-except
      return images.ImageDecodeError(item.path, f'{type(e).__name__}: {e}')

  def __iter__(self) -> Iterator[tuple[list[listing.InputItem], list[Any]]]:
    pending: collections.deque = collections.deque()
    nxt = 0
    try:
      for i in range(len(self.groups)):
        while nxt < len(self.groups) and nxt <= i + self.ahead:
          pending.append([self.pool.submit(self._safe_load, it) for it in self.groups[nxt]])
          nxt += 1
        futures = pending.popleft()
        yield list(self.groups[i]), [self._wait(f) for f in futures]
    finally:
      self.close()

  def _wait(self, future: concurrent.futures.Future) -> Any:
    """The future's result; raises ``preemption.Preempted`` if ``stop()`` turns True while waiting (a slow
    file system must not delay a preemption notice)."""
    while True:
      try:
        return future.result(timeout=0.5)
      except concurrent.futures.TimeoutError:
        if self.stop is not None and self.stop():
          raise preemption.Preempted() from None

  def close(self):
    self.pool.shutdown(wait=False, cancel_futures=True)
