"""The inputs of a job: a directory (recursive), a glob, a list file or one image -> named items.

Every image is identified by its *name*: its path relative to the directory / the glob's fixed prefix /
the list file's folder, with ``/`` separators. Output stems are the name without extension with ``/``
replaced by ``__`` (other unsafe characters by ``_``); names whose stems still clash (``a/b.png`` and
``a/b.jpg``, also case-insensitively) get ``-<8 hex of sha256(name)>`` appended, longer when that is
taken too (an input literally named ``a__b-1a2b3c4d.png``): stems are assigned in one deterministic
pass, every one distinct, so no result overwrites another. Image i's key is ``fold_in(key(seed),
uint32(sha256(name)[:4]))``: its result depends on its name only, not on batch composition, device or
process count, or restarts.

Listing rules (every mode):
* A directory is searched recursively for files with an ``images.IMAGE_EXTENSIONS`` extension (others
  are counted in a log line, a folder with an image extension is logged and searched too); hidden names
  (``.x``) are skipped. A glob matches the same walk's entries
  (``*`` / ``?`` / ``[..]`` within one path segment, ``**`` across segments; hidden names skipped); a
  folder it matches is reported in the log, or as an input error when it has an image extension (a
  folder named ``x.png`` is not silently dropped). A list file holds one path per line (relative to the
  list file; blank lines and ``#`` comments skipped); every line is an input (a missing file or a folder
  becomes that input's error when it is read).
* Symlinked folders are followed at most once (every mode that walks folders: directory and glob): each
  folder is entered once per listing, by its real path; a link that leads back inside the listed folder
  (``self -> .``, ``up -> ..`` within it, a second name for a subfolder) is not followed, the folder
  being listed under its own name; so links neither loop nor list a file twice (each skipped link is
  logged). List files name files, one level: nothing to follow.
* ``exclude`` (the job's output folder) is compared by real path: that folder is never entered and no
  input whose real path lies inside it is listed, however it is reached (a symlink into it included).
* Special files (FIFOs, devices, sockets) are listed like files; reading refuses them without opening
  them (``images.read_bytes``).
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import hashlib
import os
import re
from typing import Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from pmsfc_jax.io import files
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
  """(path, name) pairs -> items with distinct stems (see the module docstring), sorted by name."""
  by_name: dict[str, str] = {}
  for path, name in pairs:
    by_name.setdefault(name, path)  # The same name listed twice is one image.
  names = sorted(by_name)
  base = {n: _name_stem(n) for n in names}
  counts = collections.Counter(b.lower() for b in base.values())  # Case-insensitive file systems too.
  taken = {base[n].lower() for n in names if counts[base[n].lower()] == 1}
  items = []
  for name in names:
    stem = base[name]
    if counts[stem.lower()] > 1:
      digest = hashlib.sha256(name.encode()).hexdigest()
      candidates = [f'{stem}-{digest[:k]}' for k in (8, 16, 64)]
      stem = next((c for c in candidates if c.lower() not in taken), None)
      k = 2
      while stem is None or stem.lower() in taken:  # 64 hex digits taken too: only a contrived list
        stem, k = f'{candidates[-1]}-{k}', k + 1
      taken.add(stem.lower())
    items.append(InputItem(path=by_name[name], name=name, stem=stem))
  return items


def _real(path: str) -> Optional[str]:
  return os.path.realpath(path) if files.is_local(path) else None


class _Walker:
  """Entries under a root folder (sorted, hidden names skipped); every folder entered at most once.

  A symlinked folder that leads inside the root is not followed (the folder it leads to is listed under
  its own name; ``self -> .`` is one); one that leads outside is followed once per real path. A folder
  is never entered twice (bind mounts included) and the ``exclude`` folder never.
  """

  def __init__(self, root: str, exclude: Optional[str]):
    self.root = _real(root)
    self.exclude = exclude  # real path of a folder never entered
    self.visited: set[str] = set()

  def _entries(self, folder: str) -> list[tuple[str, str, bool]]:
    if not files.is_local(folder):
      return [(p.name, os.fspath(p), p.is_dir()) for p in epath.Path(folder).iterdir()]
    out = []
    with os.scandir(folder) as it:
      for e in it:
        try:
          is_dir = e.is_dir()  # follows symlinks
        except OSError:
          is_dir = False
        out.append((e.name, e.path, is_dir))
    return out

  def _skip(self, path: str) -> bool:
    """Whether the folder ``path`` must not be entered (logged)."""
    r = _real(path)
    if r is None:
      return False
    why = None
    if r == self.exclude:
      why = 'is the output folder'
    elif r in self.visited:
      why = f'leads to {r}, already listed'
    elif os.path.islink(path) and (r == self.root or r.startswith(self.root.rstrip(os.sep) + os.sep)):
      why = f'is a link to {r}, listed under its own name'
    if why:
      logging.warning('listing: %s %s: not followed', path, why)
    return why is not None

  def walk(
    self, folder: str, prefix: str = '', depth: Optional[int] = None
  ) -> Iterator[tuple[str, str, bool]]:
    """(path, relative name, is_dir) of the entries; ``depth``: levels still to enter (None: all)."""
    real = _real(folder)
    if real is not None:
      self.visited.add(real)
    for name, path, is_dir in sorted(self._entries(folder)):
      if name.startswith('.'):
        continue
      rel = prefix + name
      if not is_dir:
        yield path, rel, False
      elif not self._skip(path):
        yield path, rel, True
        if depth is None or depth > 1:
          yield from self.walk(path, rel + '/', None if depth is None else depth - 1)


def _match(pattern: Sequence[str], parts: Sequence[str]) -> bool:
  """Glob segments (``**`` = any number of segments) against a relative path's segments."""
  if not pattern:
    return not parts
  if pattern[0] == '**':
    return any(_match(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
  return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match(pattern[1:], parts[1:])


def _glob(spec: str, exclude: Optional[str]) -> list[tuple[str, str]]:
  parts = spec.split('/')
  k = next(i for i, part in enumerate(parts) if _has_magic(part))
  base = '/'.join(parts[:k]) or ('/' if spec.startswith('/') else '.')
  pattern = [p for p in parts[k:] if p]
  walker = _Walker(base, exclude)
  depth = None if '**' in pattern else len(pattern)
  pairs, folders = [], []
  for path, rel, is_dir in walker.walk(base, depth=depth):
    if not _match(pattern, rel.split('/')):
      continue
    if is_dir and os.path.splitext(rel)[1].lower() not in images.IMAGE_EXTENSIONS:
      folders.append(rel)
      continue
    pairs.append((rel if base == '.' and not spec.startswith('./') else path, rel))
  if folders:
    logging.warning(
      '--images=%r: the glob also matches %d folder(s), not listed: %s', spec, len(folders), folders[:5]
    )
  if not pairs:
    raise FileNotFoundError(f'--images={spec!r}: the glob matches no files')
  return pairs


def _directory(spec: str, walker: _Walker) -> list[tuple[str, str]]:
  pairs, others = [], 0
  for path, rel, is_dir in walker.walk(spec):
    if is_dir:
      if os.path.splitext(rel)[1].lower() in images.IMAGE_EXTENSIONS:
        logging.warning('--images=%r: %s is a folder, not an image: its contents are listed', spec, rel)
      continue
    if os.path.splitext(rel)[1].lower() in images.IMAGE_EXTENSIONS:
      pairs.append((path, rel))
    else:
      others += 1
  if others:
    logging.info(
      '--images=%r: %d file(s) without an image extension %s not listed',
      spec,
      others,
      images.IMAGE_EXTENSIONS,
    )
  if not pairs:
    raise FileNotFoundError(
      f'--images={spec!r}: the directory holds no files with an image extension {images.IMAGE_EXTENSIONS}'
    )
  return pairs


def _list_file(spec: str) -> list[tuple[str, str]]:
  root = epath.Path(spec)
  folder = root.parent
  pairs = []
  for line in root.read_text().splitlines():
    line = line.strip()
    if not line or line.startswith('#'):
      continue
    if not files.is_local(line) or os.path.isabs(line):
      path = line
      name = line.split('://', 1)[-1].lstrip('/')
    else:
      path = os.fspath(folder / line)
      name = os.path.normpath(line).replace(os.sep, '/')
    pairs.append((path, name))
  if not pairs:
    raise ValueError(f'--images={spec!r}: the list file names no images')
  return pairs


def input_root(spec: str) -> Optional[str]:
  """The real path of the folder the inputs of ``spec`` are listed from (None for ``gs://``)."""
  spec = os.fspath(spec)
  if not files.is_local(spec):
    return None
  if _has_magic(spec):
    parts = spec.split('/')
    k = next(i for i, part in enumerate(parts) if _has_magic(part))
    return os.path.realpath('/'.join(parts[:k]) or ('/' if spec.startswith('/') else '.'))
  return os.path.realpath(spec if os.path.isdir(spec) else os.path.dirname(spec) or '.')


def check_output_dir(spec: str, output_dir: str) -> None:
  """Refuses an output folder equal to, or an ancestor of, the inputs' folder (by real path)."""
  root = input_root(spec)
  if root is None or not files.is_local(output_dir):
    return
  out = os.path.realpath(os.fspath(output_dir))
  if root == out or root.startswith(out.rstrip(os.sep) + os.sep):
    what = 'the input folder' if root == out else 'an ancestor of the input folder'
    raise ValueError(
      f'--output_dir={os.fspath(output_dir)!r} is {what} {root} (--images={os.fspath(spec)!r}): results would '
      'be written among the inputs; choose an output folder outside them'
    )


def list_inputs(spec: str, exclude: Optional[str] = None) -> list[InputItem]:
  """A directory (recursive), glob, list file or single image -> sorted :class:`InputItem` list.

  ``exclude``: a folder whose contents are never listed, by real path (the job's output folder).
  """
  if not spec:
    raise ValueError('--images is empty: give a directory, a glob or a text file listing images')
  spec = os.fspath(spec)
  excl = _real(os.fspath(exclude)) if exclude else None
  root = epath.Path(spec)
  if _has_magic(spec):
    pairs = _glob(spec, excl)
  elif root.is_dir():
    pairs = _directory(spec, _Walker(spec, excl))
  elif root.is_file() and root.suffix.lower() in images.IMAGE_EXTENSIONS:
    pairs = [(spec, root.name)]
  elif root.is_file():
    pairs = _list_file(spec)
  else:
    raise FileNotFoundError(f'--images={spec!r} is neither a directory, a glob, a list file nor an image')
  if excl is not None:
    inside = [p for p, _ in pairs if files.is_local(p) and os.path.realpath(p).startswith(excl + os.sep)]
    if inside:
      logging.warning(
        'listing: %d input(s) inside the output folder %s not listed: %s', len(inside), excl, inside[:5]
      )
      inside = set(inside)
      pairs = [(p, n) for p, n in pairs if p not in inside]
    if not pairs:
      raise FileNotFoundError(f'--images={spec!r}: every input lies inside the output folder {excl}')
  return _assign_stems(pairs)


def image_keys(seed: int, names: Sequence[str]) -> np.ndarray:
  """(B, 2) uint32 raw keys: ``fold_in(key(seed), uint32(sha256(name)[:4]))`` per image."""
  h = np.array([int.from_bytes(hashlib.sha256(n.encode()).digest()[:4], 'little') for n in names], np.uint32)
  base = jax.random.key(int(seed))
  keys = jax.vmap(lambda x: jax.random.fold_in(base, x))(jnp.asarray(h))
  return np.asarray(jax.random.key_data(keys))
