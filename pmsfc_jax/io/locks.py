"""One writer per output folder: an exclusive ``flock`` on a lock file in the folder, held for a job's life.

``FolderLock(out, name).acquire()`` opens ``OUT/<name>`` (``O_CREAT``; the file is never written after
the holder's pid) and takes ``flock(LOCK_EX | LOCK_NB)``; when another process holds it,
:class:`FolderLocked` is raised at once (its message names the folder and the holder's pid) and nothing
in the folder is modified. The kernel releases the lock when the holder exits, however it exits
(``kill -9`` included), so a stale lock file never blocks the next run. ``flock`` works on local
file systems; on NFS it depends on the server (Linux clients emulate it with POSIX locks).

Object stores (``gs://``) have no lock: :meth:`acquire` logs a warning that concurrent writers are not
prevented there, and does nothing else (run one job per output folder yourself).
"""

from __future__ import annotations

import fcntl
import os
from typing import Optional

from absl import logging
from etils import epath

from pmsfc_jax.io import files


class FolderLocked(RuntimeError):
  """Another running job holds the folder's lock."""


class FolderLock:
  """The exclusive lock of one output folder (see the module docstring)."""

  def __init__(self, folder: str | os.PathLike, name: str = '.lock'):
    self.path = epath.Path(folder) / name
    self._fd: Optional[int] = None

  def acquire(self) -> 'FolderLock':
    if not files.is_local(self.path):
      logging.warning(
        '%s: object stores have no file lock; concurrent jobs writing to this folder are NOT prevented',
        self.path.parent,
      )
      return self
    fd = os.open(os.fspath(self.path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 64, 0).decode(errors='replace').strip() or 'unknown'
      os.close(fd)
      raise FolderLocked(
        f'{self.path.parent} is in use by another running job (pid {holder} holds {self.path}); '
        'wait for it to end, or choose another --output_dir'
      ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # closing the descriptor releases the flock
      self._fd = None

  def __enter__(self) -> 'FolderLock':
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
