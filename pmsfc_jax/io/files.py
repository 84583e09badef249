"""The file helpers every job uses: atomic writes, JSON and ``.npy`` files, ``gs://``-aware paths.

Every path goes through ``etils.epath`` so ``gs://`` works on TPU hosts. A write is atomic: the bytes go
to a hidden temporary sibling (``.<name>.tmp-<pid>-<thread>``), are fsynced on local disks and then
renamed onto the target, so a reader never sees a partial file and a crash leaves at most a temporary
file (the batch job removes them at start-up, see ``TMP_MARKER``).
"""

from __future__ import annotations

import io
import json
import os
import threading
import uuid
from typing import Any

import numpy as np
from etils import epath

TMP_MARKER = '.tmp-'
TRASH_PREFIX = '.trash-'  # folders being removed (remove_tree), left behind only by a kill


def is_local(path: str | os.PathLike) -> bool:
  return '://' not in os.fspath(path)


def absolute(path: str | os.PathLike) -> epath.Path:
  """``path`` made absolute (local paths; ``gs://...`` are absolute already), as orbax wants them."""
  p = epath.Path(path)
  return p.absolute() if is_local(p) else p


def replace(src: epath.Path, dst: epath.Path) -> None:
  """Renames ``src`` onto ``dst``, overwriting it atomically (``epath`` ``rename`` refuses a target)."""
  epath.Path(src).replace(dst)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes ``data`` to a hidden temporary sibling, fsyncs it (local disks), renames it onto ``path``."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f'.{path.name}{TMP_MARKER}{os.getpid()}-{threading.get_ident()}'
  if not is_local(path):
    tmp.write_bytes(data)
  else:
    with open(os.fspath(tmp), 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
  replace(tmp, path)


def write_json(path: str | os.PathLike, obj: Any, indent: int = 1) -> None:
  """``obj`` as sorted, indented JSON plus a newline, written atomically."""
  atomic_write_bytes(path, (json.dumps(obj, indent=indent, sort_keys=True) + '\n').encode())


def npy_bytes(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  np.save(buf, np.asarray(array), allow_pickle=False)
  return buf.getvalue()


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
  """Writes a plain ``.npy`` (no pickles) atomically."""
  atomic_write_bytes(path, npy_bytes(array))


def load_npy(path: str | os.PathLike, what: str = 'array') -> np.ndarray:
  """Reads a plain ``.npy`` array (never unpickles); errors name ``what`` and the file."""
  p = epath.Path(path)
  if not p.exists():
    raise FileNotFoundError(f'{what} {path} does not exist')
  try:
    with p.open('rb') as f:
      array = np.load(f, allow_pickle=False)
  except ValueError as e:
    raise ValueError(f'{what} {path}: not a plain .npy array ({e})') from None
  if not isinstance(array, np.ndarray):  # np.load opens .npz archives too
    array.close()
    raise ValueError(f'{what} {path}: an .npz archive, not a plain .npy array (write it with np.save)')
  return array


def remove_tree(path: str | os.PathLike) -> None:
  """Removes a folder by first renaming it aside (atomic on POSIX), so a kill never leaves half of it."""
  path = epath.Path(path)
  if not path.exists():
    return
  trash = path.parent / f'{TRASH_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}'
  path.rename(trash)
  trash.rmtree()
