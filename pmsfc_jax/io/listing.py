"""The inputs of a job: a directory (recursive), a glob, a list file or one image -> named items.

Every image is identified by its *name*: its path relative to the directory / the glob's fixed prefix /
the list file's folder, with ``/`` separators (hidden files and folders skipped; directories are searched
for ``images.IMAGE_EXTENSIONS``). List files hold one path per line (relative paths are relative to the
list file; blank lines and ``#`` comments skipped). Output stems are the name without extension with
``/`` replaced by ``__`` (other unsafe characters by ``_``); if two names still map to the same stem
(``a/b.png`` and ``a/b.jpg``), each gets ``-<8 hex of sha256(name)>`` appended, so no result overwrites
another. Image i's key is ``fold_in(key(seed), uint32(sha256(name)[:4]))``: its result depends on its
name only, not on batch composition, device or process count, or restarts.
"""

from __future__ import annotations

import collections
import dataclasses
import glob as globlib
import hashlib
import os
import re
from typing import Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from pmsfc_jax.io import images


@dataclasses.dataclass(frozen=True)
class InputItem:
  """One input image: ``path`` to read, ``name`` (its identity: relative path), output ``stem``."""

  path: str
  name: str
  stem: str

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def _has_magic(s: str) -> bool:
  return any(ch in s for ch in '*?[')


def _name_stem(name: str) -> str:
  stem = name.rsplit('.', 1)[0] if '.' in name.rsplit('/', 1)[-1] else name
  stem = stem.replace('/', '__')
  stem = re.sub(r'[^A-Za-z0-9._+=@-]', '_', stem).lstrip('.')
  return stem or '_'


def _assign_stems(pairs: Sequence[tuple[str, str]]) -> list[InputItem]:
  """(path, name) pairs -> items with unique stems (see the module docstring), sorted by name."""
  by_name: dict[str, str] = {}
  for path, name in pairs:
    by_name.setdefault(name, path)  # The same name listed twice is one image.
  names = sorted(by_name)
  stems = [_name_stem(n) for n in names]
  counts = collections.Counter(s.lower() for s in stems)  # Case-insensitive file systems too.
  items = []
  for name, stem in zip(names, stems):
    if counts[stem.lower()] > 1:
      stem = f'{stem}-{hashlib.sha256(name.encode()).hexdigest()[:8]}'
    items.append(InputItem(path=by_name[name], name=name, stem=stem))
  if len({i.stem.lower() for i in items}) != len(items):  # Pathological: hashed stems collide too.
    raise ValueError('could not give every input a unique output stem; rename the inputs')
  return items


def _walk(root: epath.Path, prefix: str = '') -> Iterator[tuple[epath.Path, str]]:
  """Non-directory entries under ``root`` (recursively; hidden names and symlinked folders skipped)."""
  for p in sorted(root.iterdir(), key=lambda q: q.name):
    if p.name.startswith('.'):
      continue
    rel = prefix + p.name
    if p.is_dir():
      if not os.path.islink(os.fspath(p)):
        yield from _walk(p, rel + '/')
    else:
      yield p, rel


def list_inputs(spec: str, exclude: Optional[str] = None) -> list[InputItem]:
  """A directory (recursive), glob, list file or single image -> sorted :class:`InputItem` list.

  ``exclude``: a directory whose contents are never listed (the job's output directory).
  """
  if not spec:
    raise ValueError('--images is empty: give a directory, a glob or a text file listing images')
  spec = os.fspath(spec)
  excl = os.path.abspath(os.fspath(exclude)) + os.sep if exclude and '://' not in str(exclude) else None

  def keep(p: str) -> bool:
    return excl is None or '://' in p or not os.path.abspath(p).startswith(excl)

  pairs: list[tuple[str, str]] = []
  if _has_magic(spec):
    parts = spec.split('/')
    k = next(i for i, part in enumerate(parts) if _has_magic(part))
    base = '/'.join(parts[:k]) or ('/' if spec.startswith('/') else '.')
    pattern = '/'.join(parts[k:])
    if '://' in spec:
      matches = [str(p) for p in epath.Path(base).glob(pattern)]
    else:
      matches = globlib.glob(spec, recursive=True)
    for m in matches:
      if epath.Path(m).is_dir() or not keep(m):
        continue
      pairs.append((m, os.path.relpath(m, base) if '://' not in m else m[len(base) :].lstrip('/')))
    if not pairs:
      raise FileNotFoundError(f'--images={spec!r}: the glob matches no files')
  else:
    root = epath.Path(spec)
    if root.is_dir():
      for p, rel in _walk(root):
        if p.suffix.lower() in images.IMAGE_EXTENSIONS and keep(os.fspath(p)):
          pairs.append((os.fspath(p), rel))
      if not pairs:
        raise FileNotFoundError(
          f'--images={spec!r}: the directory holds no files with an image extension {images.IMAGE_EXTENSIONS}'
        )
    elif root.is_file() and root.suffix.lower() in images.IMAGE_EXTENSIONS:
      pairs.append((spec, root.name))
    elif root.is_file():
      folder = root.parent
      for line in root.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
          continue
        if '://' in line or os.path.isabs(line):
          path = line
          name = line.split('://', 1)[-1].lstrip('/')
        else:
          path = os.fspath(folder / line)
          name = os.path.normpath(line).replace(os.sep, '/')
        pairs.append((path, name))
      if not pairs:
        raise ValueError(f'--images={spec!r}: the list file names no images')
    else:
      raise FileNotFoundError(f'--images={spec!r} is neither a directory, a glob, a list file nor an image')
  return _assign_stems(pairs)


def image_keys(seed: int, names: Sequence[str]) -> np.ndarray:
  """(B, 2) uint32 raw keys: ``fold_in(key(seed), uint32(sha256(name)[:4]))`` per image."""
  h = np.array([int.from_bytes(hashlib.sha256(n.encode()).digest()[:4], 'little') for n in names], np.uint32)
  base = jax.random.key(int(seed))
  keys = jax.vmap(lambda x: jax.random.fold_in(base, x))(jnp.asarray(h))
  return np.asarray(jax.random.key_data(keys))
