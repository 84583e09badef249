"""The batch job's commit record: one JSON line per finished image in ``OUT/manifest[.p<i>].jsonl``.

An image is *done* iff it has a manifest line, and it has exactly one: the line is appended (``O_APPEND``,
one ``write``, fsync) only after the image's PNG and NPZ are in place; a torn last line (a kill in the
middle of a write) is dropped at start-up; errors are final unless ``job.retry_failed``.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Iterable

from absl import logging
from etils import epath

from pmsfc_jax.io import files

MANIFEST = 'manifest.jsonl'


def read_jsonl(path: epath.Path) -> tuple[list[dict], bool]:
  """Valid records of a JSONL file and whether it needs repair (torn / invalid / duplicate lines)."""
  if not path.exists():
    return [], False
  records, seen, dirty = [], set(), False
  text = path.read_text()
  if text and not text.endswith('\n'):
    dirty = True
  for line in text.splitlines():
    try:
      rec = json.loads(line)
      name = rec['name']
    except (json.JSONDecodeError, KeyError, TypeError):
      dirty = True
      continue
    if name in seen:
      dirty = True
      continue
    seen.add(name)
    records.append(rec)
  return records, dirty


def line(record: dict) -> bytes:
  return (json.dumps(record, sort_keys=True) + '\n').encode()


def jsonl(records: Iterable[dict]) -> bytes:
  return b''.join(line(r) for r in records)


class Manifest:
  """This process's manifest file: one JSON line per finished image (the commit record)."""

  def __init__(self, out_dir: epath.Path, process_index: int, process_count: int):
    self.out_dir = out_dir
    self.path = out_dir / (MANIFEST if process_count == 1 else f'manifest.p{process_index}.jsonl')
    self._lock = threading.Lock()

  def all_paths(self) -> list[epath.Path]:
    return sorted(self.out_dir.glob('manifest*.jsonl'))

  def load_done(self, retry_failed: bool = False) -> dict[str, dict]:
    """name -> record over every manifest file in the folder (repairs this process's own file)."""
    own, dirty = read_jsonl(self.path)
    if retry_failed and any(r.get('status') != 'ok' for r in own):
      own, dirty = [r for r in own if r.get('status') == 'ok'], True
    if dirty:
      logging.warning('%s: dropping torn/duplicate lines (rewriting it atomically)', self.path)
      files.atomic_write_bytes(self.path, jsonl(own))
    done = {}
    for p in self.all_paths():
      recs = own if p == self.path else read_jsonl(p)[0]
      for r in recs:
        if retry_failed and r.get('status') != 'ok':
          continue
        done.setdefault(r['name'], r)
    return done

  def forget(self, names: set[str]) -> None:
    """Rewrites this process's file (atomically) without the lines of ``names`` (results to redo)."""
    with self._lock:
      own, _ = read_jsonl(self.path)
      kept = [r for r in own if r['name'] not in names]
      if len(kept) != len(own):
        files.atomic_write_bytes(self.path, jsonl(kept))

  def append(self, record: dict) -> None:
    data = line(record)
    with self._lock:
      if not files.is_local(self.path):  # Object stores cannot append: rewrite (atomic) the whole file.
        old = self.path.read_bytes() if self.path.exists() else b''
        files.atomic_write_bytes(self.path, old + data)
        return
      fd = os.open(os.fspath(self.path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
      try:
        os.write(fd, data)
        os.fsync(fd)
      finally:
        os.close(fd)
