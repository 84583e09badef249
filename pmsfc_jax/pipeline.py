"""The batch inversion job (issue 6): thousands of images, sharded over devices and hosts, resumable.

``run(config)`` lists the inputs, decodes them in a background thread pool (prefetching the next
batches), lays every batch out over a device mesh (``distributed.py``), runs ``inversion.init_state`` /
``run_steps`` (in chunks, with orbax checkpoints of the optimisation state between them) / ``finalize``,
and writes per image ``OUT/<stem>.png`` (the task result), ``OUT/<stem>.npz`` (codes, weights, subspace
masks, loss history, key, config) and one line of ``OUT/manifest.jsonl``; at the end ``OUT/summary.json``.

Inputs (``config.images``): a directory (searched recursively for the extensions in
``imageio.IMAGE_EXTENSIONS``; hidden files skipped), a glob (``'data/**/*.jpg'``), a text file listing
one path per line (relative paths are relative to the list file; blank lines and ``#`` comments skipped),
or one image file. Every image is identified by its *name*: its path relative to the directory / the
glob's fixed prefix / the list file's folder, with ``/`` separators. Output stems are the name without
extension with ``/`` replaced by ``__`` (other unsafe characters by ``_``); if two names still map to the
same stem (``a/b.png`` and ``a/b.jpg``), each of them gets ``-<8 hex of sha256(name)>`` appended, so no
result overwrites another.

Image size rule: every input goes through ``imageio.decode`` (EXIF transpose, alpha on white, centre crop
or pad to a square by ``config.crop``, Lanczos/bicubic resize) to the generator's resolution ``R``; for
``task='super_resolve'`` the input is the *low-resolution* image and is brought to ``R // factor`` (the
factor must divide ``R``; e.g. a 1024 generator with factor 16 takes 64x64 inputs).

Determinism. Image i's key is ``fold_in(key(config.seed), uint32(sha256(name)[:4]))``, so its result
depends neither on batch composition (each image is optimised independently), device count, process
count nor restarts. Padding rows (copies of the batch's first image) are discarded.

Robustness.
* Bad inputs (zero-byte, truncated, non-image, unreadable, decompression bombs) produce a manifest line
  ``{"status": "error", "error": "<path>: <reason>"}`` and the job goes on; the exit status says some
  failed. A batch whose inversion raises marks its images failed the same way.
* Every file is written atomically (temporary name + fsync + rename); the manifest line is appended
  (``O_APPEND``, one ``write``, fsync) only after the image's PNG and NPZ are in place, so the manifest
  is the commit record: an image is *done* iff it has a manifest line, and it has exactly one (a torn
  last line is dropped at start-up; errors are final unless ``config.retry_failed``).
* Every ``config.checkpoint_every`` steps the batch's ``InversionState`` (codes, weights, optimizer
  state, step, per-image keys, loss history) is saved with an orbax ``CheckpointManager`` in
  ``OUT/.checkpoints/p<process>``; on restart finished images are skipped and the interrupted batch
  continues from its checkpoint (results equal an uninterrupted run: ``run_steps`` chunks compose).
* SIGTERM (preemption) sets a flag checked after every scan chunk: the state is saved, the job exits
  with status 143 and the next run resumes. Multi-host: each process handles its own SIGTERM (hosts are
  independent, see ``distributed.py``; ``multihost_utils.reached_preemption_sync_point`` needs lockstep
  steps across hosts, which independent shares do not have) and still joins the final barrier.
* A changed configuration (anything that changes results: method/task/hyper-parameters/seed, generator
  weights, subspace masks, inpainting mask, crop policy) with the same output directory is refused
  unless ``config.overwrite_config`` (then old manifests and checkpoints are removed and every image is
  redone). Batch size, device / process count, checkpoint cadence and the input list may change freely.

Fault injection for tests: ``PMSFC_FAULT='point:n[:SIGNAL][,...]'`` sends SIGKILL (or SIGNAL) to the job
the n-th time it reaches ``point`` (``chunk``, ``checkpoint``, ``write`` (between a result file's temp
write and rename), ``manifest_torn`` (after half a manifest line), ``batch_done``).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import glob as globlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import threading
import time
import uuid
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pmsfc_jax import distributed
from pmsfc_jax import imageio

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_PREEMPTED = 143  # 128 + SIGTERM: the job saved its state; run it again to resume.

MANIFEST = 'manifest.jsonl'
SUMMARY = 'summary.json'
CONFIG_RECORD = 'config.json'
CHECKPOINTS = '.checkpoints'
FINGERPRINT_VERSION = 1
LIST_SUFFIXES = ('.txt', '.lst', '.list')

# Job settings with their defaults (added to configs that lack them, e.g. launch/configs/invert.py).
JOB_DEFAULTS = dict(
    generator='', subspaces='', images='', output_dir='', mask='', mask_threshold=0.5,
    batch_size=8, checkpoint_every=500, chunk_size=500, seed=0, crop='center',
    distributed=False, coordinator_address='', num_processes=0, process_id=-1, num_devices=0,
    num_workers=4, prefetch_batches=2, overwrite_config=False, retry_failed=False,
    log_every_s=30.0, lpips=False,
)
# Settings that do not change any image's result (excluded from the configuration fingerprint).
# generator / subspaces / mask are paths: their *contents* are fingerprinted instead.
NON_RESULT_KEYS = frozenset({
    'generator', 'subspaces', 'images', 'output_dir', 'mask', 'batch_size', 'checkpoint_every',
    'chunk_size', 'distributed', 'coordinator_address', 'num_processes', 'process_id', 'num_devices',
    'num_workers', 'prefetch_batches', 'overwrite_config', 'retry_failed', 'log_every_s', 'lpips',
    'num_subspaces',
})


class ConfigMismatchError(ValueError):
  """The output directory holds results of a different configuration."""


class Preempted(Exception):
  """SIGTERM received: state saved, exit to be resumed later."""


def with_job_defaults(config: Any) -> ml_collections.ConfigDict:
  """A copy of ``config`` (ConfigDict or dict) with every missing job setting at its default."""
  c = ml_collections.ConfigDict(config.to_dict() if hasattr(config, 'to_dict') else dict(config))
  for k, v in JOB_DEFAULTS.items():
    if k not in c or c[k] is None:
      c[k] = v
  return c


# ------------------------------------------------------------------------------------------------
# Fault injection (tests only; inert unless $PMSFC_FAULT is set).

_fault_counts: collections.Counter = collections.Counter()
_fault_lock = threading.Lock()


def _fault_due(point: str) -> Optional[int]:
  spec = os.environ.get('PMSFC_FAULT', '')
  if not spec:
    return None
  for part in spec.split(','):
    fields = part.strip().split(':')
    if fields[0] != point:
      continue
    with _fault_lock:
      _fault_counts[point] += 1
      count = _fault_counts[point]
    if count == int(fields[1]):
      return getattr(signal, fields[2]) if len(fields) > 2 else signal.SIGKILL
  return None


def fault_point(point: str) -> None:
  sig = _fault_due(point)
  if sig is not None:
    logging.warning('PMSFC_FAULT: sending %s to myself at %r', signal.Signals(sig).name, point)
    os.kill(os.getpid(), sig)
    if sig == signal.SIGKILL:
      time.sleep(60)


# ------------------------------------------------------------------------------------------------
# Listing.


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
    by_name.setdefault(name, path)      # The same name listed twice is one image.
  names = sorted(by_name)
  stems = [_name_stem(n) for n in names]
  counts = collections.Counter(s.lower() for s in stems)  # Case-insensitive file systems too.
  items = []
  for name, stem in zip(names, stems):
    if counts[stem.lower()] > 1:
      stem = f'{stem}-{hashlib.sha256(name.encode()).hexdigest()[:8]}'
    items.append(InputItem(path=by_name[name], name=name, stem=stem))
  if len({i.stem.lower() for i in items}) != len(items):   # Pathological: hashed stems collide too.
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
      pairs.append((m, os.path.relpath(m, base) if '://' not in m else m[len(base):].lstrip('/')))
    if not pairs:
      raise FileNotFoundError(f'--images={spec!r}: the glob matches no files')
  else:
    root = epath.Path(spec)
    if root.is_dir():
      for p, rel in _walk(root):
        if p.suffix.lower() in imageio.IMAGE_EXTENSIONS and keep(os.fspath(p)):
          pairs.append((os.fspath(p), rel))
      if not pairs:
        raise FileNotFoundError(f'--images={spec!r}: the directory holds no files with an image extension '
                                f'{imageio.IMAGE_EXTENSIONS}')
    elif root.is_file() and root.suffix.lower() in imageio.IMAGE_EXTENSIONS:
      pairs.append((spec, root.name))
    elif root.is_file():
      folder = root.parent
      for lineno, line in enumerate(root.read_text().splitlines(), 1):
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
  h = np.array([int.from_bytes(hashlib.sha256(n.encode()).digest()[:4], 'little') for n in names],
               np.uint32)
  base = jax.random.key(int(seed))
  keys = jax.vmap(lambda x: jax.random.fold_in(base, x))(jnp.asarray(h))
  return np.asarray(jax.random.key_data(keys))


# ------------------------------------------------------------------------------------------------
# Manifest.


def _is_local(path: epath.Path) -> bool:
  return '://' not in str(path)


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


def _jsonl(records: Iterable[dict]) -> bytes:
  return ''.join(json.dumps(r, sort_keys=True) + '\n' for r in records).encode()


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
      imageio.atomic_write_bytes(self.path, _jsonl(own))
    done = {}
    for p in self.all_paths():
      recs = own if p == self.path else read_jsonl(p)[0]
      for r in recs:
        if retry_failed and r.get('status') != 'ok':
          continue
        done.setdefault(r['name'], r)
    return done

  def append(self, record: dict) -> None:
    line = (json.dumps(record, sort_keys=True) + '\n').encode()
    with self._lock:
      if not _is_local(self.path):   # Object stores cannot append: rewrite (atomic) the whole file.
        old = self.path.read_bytes() if self.path.exists() else b''
        imageio.atomic_write_bytes(self.path, old + line)
        return
      fd = os.open(os.fspath(self.path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
      try:
        sig = _fault_due('manifest_torn')
        if sig is not None:
          os.write(fd, line[:len(line) // 2])
          os.fsync(fd)
          os.kill(os.getpid(), sig)
          time.sleep(60)
        os.write(fd, line)
        os.fsync(fd)
      finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------
# Configuration fingerprint.


def _flatten(d: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(d, dict):
    out = {}
    for k, v in d.items():
      out.update(_flatten(v, f'{prefix}{k}.'))
    return out
  return {prefix[:-1]: d}


def _sha(arrays: Iterable[np.ndarray]) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(str((a.dtype.str, a.shape)).encode())
    h.update(a.tobytes())
  return h.hexdigest()


def fingerprint_payload(config: ml_collections.ConfigDict, gen, masks: Optional[np.ndarray],
                        known: Optional[np.ndarray]) -> dict:
  """Everything that changes results, as JSON: config values, weights / masks content hashes."""
  cfg = {k: v for k, v in config.to_dict().items() if k not in NON_RESULT_KEYS}
  if cfg.get('task') != 'super_resolve':   # Task-specific settings that the task does not use.
    cfg.pop('factor', None)
    cfg.pop('downsample', None)
  if cfg.get('task') != 'inpaint':
    cfg.pop('mask_threshold', None)
  leaves = jax.tree_util.tree_flatten_with_path(gen.params)[0]
  leaves = sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0]))
  return json.loads(json.dumps({
      'version': FINGERPRINT_VERSION,
      'config': cfg,
      'generator': {'config': gen.config.to_dict(), 'params_sha256': _sha(np.asarray(v) for _, v in leaves)},
      'subspace_masks_sha256': None if masks is None else _sha([np.asarray(masks)]),
      'inpainting_mask_sha256': None if known is None else _sha([np.asarray(known)]),
  }, sort_keys=True, default=str))


def _digest(payload: dict) -> str:
  return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def check_config(out_dir: epath.Path, payload: dict, overwrite: bool, is_writer: bool) -> str:
  """Records ``payload`` in ``OUT/config.json`` or checks it against the recorded one."""
  digest = _digest(payload)
  record_path = out_dir / CONFIG_RECORD
  if record_path.exists():
    old = json.loads(record_path.read_text())
    if old.get('fingerprint') != digest:
      if not overwrite:
        a, b = _flatten(old.get('payload', {})), _flatten(payload)
        diffs = [f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        raise ConfigMismatchError(
            f'{out_dir} holds results of a different configuration (fingerprint {old.get("fingerprint")} '
            f'!= {digest}); differences: {"; ".join(diffs[:12]) or "unknown"}. Use another --output_dir, '
            f'or pass --overwrite_config to discard the old manifest and checkpoints and redo every image.')
      if is_writer:
        logging.warning('%s: configuration changed and --overwrite_config given: removing old manifests '
                        'and checkpoints', out_dir)
        for p in out_dir.glob('manifest*.jsonl'):
          p.unlink()
        for p in (out_dir / SUMMARY,):
          if p.exists():
            p.unlink()
        _rmtree(out_dir / CHECKPOINTS)
    elif old.get('fingerprint') == digest:
      return digest
  if is_writer:
    imageio.atomic_write_bytes(record_path, json.dumps({'fingerprint': digest, 'payload': payload},
                                                       indent=1, sort_keys=True).encode())
  return digest


def _rmtree(path: epath.Path) -> None:
  """Removes a folder by first renaming it aside (atomic on POSIX), so a kill never leaves half of it."""
  if not path.exists():
    return
  trash = path.parent / f'.trash-{path.name}-{uuid.uuid4().hex[:8]}'
  path.rename(trash)
  trash.rmtree()


# ------------------------------------------------------------------------------------------------
# Checkpoints of the interrupted batch.


class BatchCheckpoint:
  """orbax CheckpointManager of one process's current batch (``OUT/.checkpoints/p<i>``)."""

  def __init__(self, root: epath.Path, process_index: int, process_count: int):
    self.dir = root / f'p{process_index}'
    self.process_index = process_index
    self.process_count = process_count
    self._mngr = None

  def _manager(self):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    if self._mngr is None:
      mp = ocp.options.MultiprocessingOptions()
      if self.process_count > 1:   # Process-local checkpoints: no cross-host barriers.
        mp = ocp.options.MultiprocessingOptions(primary_host=self.process_index,
                                                active_processes={self.process_index},
                                                barrier_sync_key_prefix=f'pmsfc_p{self.process_index}')
      self.dir.mkdir(parents=True, exist_ok=True)  # (orbax refuses create=True with active_processes)
      self._mngr = ocp.CheckpointManager(
          self.dir.absolute() if _is_local(self.dir) else self.dir,
          item_names=('state', 'meta'),
          options=ocp.CheckpointManagerOptions(max_to_keep=1, create=False, enable_async_checkpointing=False,
                                               cleanup_tmp_directories=True, multiprocessing_options=mp))
    return self._mngr

  def latest(self) -> Optional[tuple[int, dict]]:
    """(step, meta) of the saved batch, or None."""
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    if not self.dir.exists():
      return None
    try:
      step = self._manager().latest_step()
      if step is None:
        return None
      meta = self._manager().restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
      return step, dict(meta)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('ignoring unreadable batch checkpoint in %s (%s: %s)', self.dir, type(e).__name__, e)
      self.discard()
      return None

  def save(self, step: int, state: Any, meta: dict) -> None:
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    host_state = distributed.unreplicate_to_host(state)
    self._manager().save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(host_state),
                                                       meta=ocp.args.JsonSave(meta)), force=True)
    self._manager().wait_until_finished()

  def restore(self, step: int, like: Any) -> Any:
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    target = distributed.unreplicate_to_host(like)
    return self._manager().restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))['state']

  def discard(self) -> None:
    if self._mngr is not None:
      self._mngr.close()
      self._mngr = None
    _rmtree(self.dir)

  def close(self) -> None:
    if self._mngr is not None:
      self._mngr.close()
      self._mngr = None


# ------------------------------------------------------------------------------------------------
# Background decoding with prefetch.


class Prefetcher:
  """Decodes the images of upcoming batches in a thread pool while the current batch optimises.

  Yields ``(group, decoded)`` in order, ``decoded[j]`` an array or the ``ImageDecodeError`` of
  ``group[j]``. At most ``prefetch_batches`` batches beyond the current one are in flight.
  (Pillow's decoders release the GIL; a thread pool keeps the job's resume order under our control,
  which grain's sampler would own.)
  """

  def __init__(self, groups: Sequence[Sequence[InputItem]], load: Callable[[InputItem], np.ndarray],
               num_workers: int = 4, prefetch_batches: int = 2):
    self.groups = list(groups)
    self.load = load
    self.ahead = max(0, int(prefetch_batches))
    self.pool = concurrent.futures.ThreadPoolExecutor(max(1, int(num_workers)), 'pmsfc-decode')

  def _safe_load(self, item: InputItem):
    try:
      return self.load(item)
    except imageio.ImageDecodeError as e:
      return e
    except Exception as e:  # pylint: disable=broad-except
      return imageio.ImageDecodeError(item.path, f'{type(e).__name__}: {e}')

  def __iter__(self) -> Iterator[tuple[list[InputItem], list[Any]]]:
    pending: collections.deque = collections.deque()
    nxt = 0
    try:
      for i in range(len(self.groups)):
        while nxt < len(self.groups) and nxt <= i + self.ahead:
          pending.append([self.pool.submit(self._safe_load, it) for it in self.groups[nxt]])
          nxt += 1
        futures = pending.popleft()
        yield list(self.groups[i]), [f.result() for f in futures]
    finally:
      self.close()

  def close(self):
    self.pool.shutdown(wait=False, cancel_futures=True)


# ------------------------------------------------------------------------------------------------
# Metrics.


def _metric_fns(want_lpips: bool):
  """(psnr, ssim, lpips or None) on batches in [0, 1], from pmsfc_jax.metrics.

  Images smaller than SSIM's 11-pixel Gaussian window (tiny generators, super-resolution inputs) use
  dm-pix SSIM with the window shrunk to the image size.
  """
  import dm_pix  # pylint: disable=g-import-not-at-top
  from pmsfc_jax import metrics  # pylint: disable=g-import-not-at-top

  def ssim(a, b):
    if min(a.shape[1], a.shape[2]) < 11:
      return dm_pix.ssim(a, b, max_val=1.0, filter_size=min(a.shape[1], a.shape[2]), filter_sigma=1.5)
    return metrics.ssim(a, b)

  return metrics.psnr, ssim, (metrics.lpips if want_lpips else None)


def _finite_or_none(x) -> Optional[float]:
  x = float(np.asarray(x).reshape(()))
  return x if np.isfinite(x) else None


# ------------------------------------------------------------------------------------------------
# The job.


@dataclasses.dataclass
class _Job:
  config: ml_collections.ConfigDict
  out: epath.Path
  gen: Any
  percep: Any
  masks: Optional[np.ndarray]
  known: Optional[np.ndarray]
  mesh: Any
  batch_shape: int
  input_size: int
  manifest: Manifest
  ckpt: BatchCheckpoint
  fingerprint: str
  metric_fns: tuple
  preempt: threading.Event
  process_index: int
  process_count: int
  stats: dict = dataclasses.field(default_factory=lambda: collections.Counter())


def _load_subspace_masks(spec: str, layer: int) -> np.ndarray:
  try:
    from pmsfc_jax import discovery  # pylint: disable=g-import-not-at-top
    sub = discovery.load_subspaces(spec)
    masks, sub_layer = np.asarray(sub.masks, bool), sub.layer
  except ImportError:
    from pmsfc_jax import checkpoints  # pylint: disable=g-import-not-at-top
    path = checkpoints.resolve_asset(spec, 'subspaces')
    with (path / 'masks.npy').open('rb') as f:
      masks = np.asarray(np.load(f, allow_pickle=False), bool)
    info = path / 'subspaces.json'
    sub_layer = json.loads(info.read_text()).get('layer', layer) if info.exists() else layer
  if int(sub_layer) != int(layer):
    raise ValueError(f'--subspaces={spec!r} were discovered at layer {sub_layer} but config.layer={layer}')
  return masks


def _setup_process(config) -> tuple[int, int]:
  if not config.distributed:
    return 0, 1
  return distributed.initialize(config.coordinator_address or None,
                                config.num_processes or None,
                                None if config.process_id < 0 else config.process_id)


def run(config: Any) -> dict:
  """Runs the batch inversion job of ``config`` (see the module docstring); returns the summary.

  ``summary['exit_code']``: 0 all images ok, 1 some failed, 143 preempted (state saved; rerun).
  """
  from pmsfc_jax import checkpoints, degradations, inversion, losses  # pylint: disable=g-import-not-at-top
  config = with_job_defaults(config)
  t_start = time.time()
  process_index, process_count = _setup_process(config)
  s = inversion.settings_from_config(config)
  if not config.output_dir:
    raise ValueError('--output_dir is required')
  if not config.generator:
    raise ValueError('--generator is required (a generator checkpoint directory or a shipped name)')
  if config.crop not in ('center', 'pad'):
    raise ValueError(f"config.crop must be 'center' or 'pad', got {config.crop!r}")
  if config.batch_size < 1:
    raise ValueError(f'--batch_size must be >= 1, got {config.batch_size}')
  if config.checkpoint_every < 0:
    raise ValueError(f'--checkpoint_every must be >= 0, got {config.checkpoint_every}')
  out = epath.Path(config.output_dir)
  out.mkdir(parents=True, exist_ok=True)

  gen = checkpoints.load_generator(config.generator)
  res = gen.config.resolution
  if s.task == 'super_resolve':
    if res % s.factor:
      raise ValueError(f'--factor={s.factor} does not divide the generator resolution {res}')
    input_size = res // s.factor
  else:
    input_size = res
  masks = None
  if s.method == 'pmsfc':
    if not config.subspaces:
      raise ValueError('--method=pmsfc needs --subspaces (a launch.discover output or a shipped name); '
                       '--method=mganprior needs none')
    masks = _load_subspace_masks(config.subspaces, s.layer)
  known = None
  if s.task == 'inpaint':
    if not config.mask:
      raise ValueError('--task=inpaint needs --mask=PNG (white = hole)')
    known = degradations.load_inpainting_mask(config.mask, size=res, threshold=config.mask_threshold)
  percep = None
  if s.perceptual_weight != 0:
    percep = losses.load_perceptual(inversion.perceptual_config(config))

  payload = fingerprint_payload(config, gen, masks, known)
  if process_index == 0:
    _clean_stale(out)
  # Every process checks (so a mismatch fails all of them, none waits at the barrier); process 0 writes.
  digest = check_config(out, payload, bool(config.overwrite_config), is_writer=process_index == 0)
  distributed.barrier('pmsfc_config_checked')

  mesh = distributed.make_mesh(config.num_devices or None)
  ndev = mesh.shape[distributed.DATA_AXIS]
  batch_shape = distributed.padded_size(int(config.batch_size), ndev)
  gen = distributed.replicate(gen, mesh)
  if percep is not None:
    percep = distributed.replicate(percep, mesh)

  job = _Job(config=config, out=out, gen=gen, percep=percep, masks=masks, known=known, mesh=mesh,
             batch_shape=batch_shape, input_size=input_size,
             manifest=Manifest(out, process_index, process_count),
             ckpt=BatchCheckpoint(out / CHECKPOINTS, process_index, process_count), fingerprint=digest,
             metric_fns=_metric_fns(bool(config.lpips)), preempt=threading.Event(),
             process_index=process_index, process_count=process_count)

  items = list_inputs(config.images, exclude=config.output_dir)
  share = distributed.process_share(items, process_index, process_count)
  done = job.manifest.load_done(bool(config.retry_failed))
  todo = [it for it in share if it.name not in done]
  logging.info('process %d/%d: %d inputs listed, %d in this share, %d already done, %d to do; '
               '%d device(s), batch shape %d', process_index, process_count, len(items), len(share),
               len(share) - len(todo), len(todo), ndev, batch_shape)

  groups, resume = _plan(job, todo, {it.name for it in share})
  preempted = False
  old_handler = _install_sigterm(job.preempt)
  try:
    _loop(job, groups, resume, len(todo))
  except Preempted:
    preempted = True
  finally:
    _restore_sigterm(old_handler)
    job.ckpt.close()

  distributed.barrier('pmsfc_all_done')
  summary = None
  if process_index == 0:
    summary = write_summary(out, items, time.time() - t_start, job, preempted)
  distributed.barrier('pmsfc_summary_written')
  if summary is None:
    summary = json.loads((out / SUMMARY).read_text())
  summary = dict(summary)
  own = {k: int(v) for k, v in job.stats.items()}
  summary['this_process'] = dict(own, process_index=process_index, preempted=preempted)
  summary['exit_code'] = (EXIT_PREEMPTED if preempted else
                          EXIT_SOME_FAILED if summary['failed'] or summary['pending'] else EXIT_OK)
  return summary


def _clean_stale(out: epath.Path) -> None:
  """Removes leftovers of killed runs: temporary result files and half-deleted checkpoint folders."""
  for p in out.glob('.*'):
    if imageio.TMP_MARKER in p.name and not p.is_dir():
      p.unlink()
  for root in (out, out / CHECKPOINTS):
    if root.exists():
      for p in root.glob('.trash-*'):
        p.rmtree() if p.is_dir() else p.unlink()


def _plan(job: _Job, todo: list[InputItem], share_names: set[str]
          ) -> tuple[list[list[InputItem]], Optional[tuple]]:
  """Batches of the to-do list; the interrupted batch (if its checkpoint is usable) goes first."""
  ndev = job.mesh.shape[distributed.DATA_AXIS]
  resume = None
  latest = job.ckpt.latest()
  if latest is not None:
    step, meta = latest
    ckpt_items = [InputItem(**d) for d in meta.get('items', [])]
    todo_names = {it.name for it in todo}
    if meta.get('fingerprint') != job.fingerprint:
      logging.warning('batch checkpoint of another configuration: discarding it')
      job.ckpt.discard()
    elif not any(it.name in todo_names for it in ckpt_items):
      job.ckpt.discard()
    elif not all(it.name in share_names for it in ckpt_items):
      logging.warning('the interrupted batch is no longer in this process\'s share (process count or '
                      'input list changed): restarting its images from step 0 where they belong')
      job.ckpt.discard()
    elif meta.get('batch_shape', 0) % ndev or meta.get('input_size') != job.input_size:
      logging.warning('batch checkpoint has batch shape %s, not divisible over %d devices: restarting '
                      'that batch', meta.get('batch_shape'), ndev)
      job.ckpt.discard()
    else:
      resume = (step, meta)
      first = list(ckpt_items)
      first_names = {i.name for i in first}
      rest = [it for it in todo if it.name not in first_names]
      groups = [first] + [rest[i:i + job.config.batch_size] for i in range(0, len(rest), job.config.batch_size)]
      logging.info('resuming a batch of %d images from step %d', len(first), step)
      return groups, resume
  b = int(job.config.batch_size)
  return [todo[i:i + b] for i in range(0, len(todo), b)], None


def _install_sigterm(event: threading.Event):
  if threading.current_thread() is not threading.main_thread():
    return None

  def handler(signum, frame):
    del frame
    logging.warning('received signal %d: will save the current batch and exit', signum)
    event.set()

  return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(old) -> None:
  if old is not None:
    signal.signal(signal.SIGTERM, old)


def _loop(job: _Job, groups: list[list[InputItem]], resume: Optional[tuple], total_todo: int) -> None:
  c = job.config
  load = lambda it: imageio.load_image(it.path, size=job.input_size, crop=c.crop)
  t0 = time.time()
  last_log = t0
  n_done = 0
  prefetcher = Prefetcher(groups, load, c.num_workers, c.prefetch_batches)
  for gi, (group, decoded) in enumerate(prefetcher):
    if job.preempt.is_set():
      raise Preempted()
    is_resume = resume is not None and gi == 0
    n_done += _run_batch(job, group, decoded, resume if is_resume else None)
    now = time.time()
    if now - last_log >= c.log_every_s or gi == len(groups) - 1:
      last_log = now
      steps = job.stats['steps']
      rate = steps / max(now - t0, 1e-9)
      remaining = (total_todo - n_done) * int(c.iterations)
      eta = remaining / rate if rate > 0 else float('inf')
      logging.info('images %d/%d done this run (ok %d, failed %d) | %.1f images*steps/s | ETA %s',
                   n_done, total_todo, job.stats['ok'], job.stats['failed'], rate, _fmt_eta(eta))


def _fmt_eta(seconds: float) -> str:
  if not np.isfinite(seconds):
    return '?'
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def _run_batch(job: _Job, group: list[InputItem], decoded: list[Any], resume: Optional[tuple]) -> int:
  """Optimises one batch and writes its results; returns the number of images recorded."""
  from pmsfc_jax import inversion  # pylint: disable=g-import-not-at-top
  c = job.config
  t0 = time.time()
  done_names = set()
  if resume is not None:
    done_names = set(job.manifest.load_done().keys())
  ok_items, arrays, recorded = [], [], 0
  for it, d in zip(group, decoded):
    if isinstance(d, Exception):
      if it.name not in done_names:
        _record(job, it, status='error', error=str(d), seconds=0.0)
        recorded += 1
      continue
    ok_items.append(it)
    arrays.append(d)
  if not ok_items:
    return recorded
  if resume is not None and [it.name for it in ok_items] != [d['name'] for d in resume[1]['items']]:
    logging.warning('inputs of the interrupted batch changed: restarting it from step 0')
    job.ckpt.discard()
    resume = None
  batch_shape = resume[1]['batch_shape'] if resume is not None else job.batch_shape
  n = len(ok_items)
  try:
    targets = distributed.shard_batch(distributed.pad_batch(np.stack(arrays), batch_shape), job.mesh)
    keys = distributed.shard_batch(
        distributed.pad_batch(image_keys(c.seed, [it.name for it in ok_items]), batch_shape), job.mesh)
    aux = None if job.known is None else jnp.asarray(job.known)
    # init_state's key-independent leaves (weights, optimizer state, step, history) come out replicated;
    # laying the whole state out over 'data' keeps every device on its own images only (otherwise XLA
    # recomputes the replicated parts of the batch on every device).
    state = distributed.shard_batch(inversion.init_state(job.gen, job.percep, targets, job.masks, c, keys, aux),
                                    job.mesh)
    meta = {'items': [it.to_dict() for it in ok_items], 'batch_shape': batch_shape,
            'fingerprint': job.fingerprint, 'input_size': job.input_size}
    step = 0
    if resume is not None:
      step = int(resume[0])
      state = distributed.shard_batch(job.ckpt.restore(step, state), job.mesh)
    iters = int(c.iterations)
    every = int(c.checkpoint_every)
    chunk = max(1, min(int(c.chunk_size) or iters, every or iters, iters or 1))
    while step < iters:
      nsteps = min(chunk, iters - step)
      if every:
        nsteps = min(nsteps, every - step % every)
      state = inversion.run_steps(job.gen, job.percep, state, targets, job.masks, c, nsteps, aux)
      step += nsteps
      job.stats['steps'] += nsteps * n
      fault_point('chunk')
      if job.preempt.is_set():
        if step < iters:
          job.ckpt.save(step, state, meta)
          logging.warning('preempted: batch state saved at step %d/%d in %s', step, iters, job.ckpt.dir)
        raise Preempted()
      if every and step % every == 0 and step < iters:
        job.ckpt.save(step, state, meta)
        fault_point('checkpoint')
    result = inversion.finalize(job.gen, state, targets, job.masks, c, aux)
    host = _host_results(job, result, targets)
  except Preempted:
    raise
  except Exception as e:  # pylint: disable=broad-except
    logging.exception('batch of %d images failed', n)
    for it in ok_items:
      if it.name not in done_names:
        _record(job, it, status='error', error=f'{it.path}: inversion failed ({type(e).__name__}: {e})',
                seconds=0.0)
        recorded += 1
    job.ckpt.discard()
    return recorded
  seconds = (time.time() - t0) / n
  cfg_json = json.dumps(c.to_dict(), sort_keys=True, default=str)
  for j, it in enumerate(ok_items):
    if it.name in done_names:
      continue
    _write_image(job, it, j, host, cfg_json, seconds)
    recorded += 1
  fault_point('batch_done')
  job.ckpt.discard()
  return recorded


def _host_results(job: _Job, result, targets) -> dict:
  """Device results -> numpy, plus per-image metrics against the target (documented in docs/)."""
  from pmsfc_jax import degradations, inversion  # pylint: disable=g-import-not-at-top
  s = inversion.settings_from_config(job.config)
  delivered = result.delivered
  compare = delivered
  if s.task == 'super_resolve':
    compare = degradations.downsample(delivered, s.factor, s.downsample)
  a = jnp.clip((compare + 1.0) / 2.0, 0.0, 1.0)
  b = jnp.clip((targets + 1.0) / 2.0, 0.0, 1.0)
  psnr_fn, ssim_fn, lpips_fn = job.metric_fns
  out = {
      'delivered': delivered, 'codes': result.codes, 'weights': result.weights,
      'loss_history': result.loss_history, 'step': result.step,
      'psnr': psnr_fn(a, b), 'ssim': ssim_fn(a, b),
      'finite': jnp.all(jnp.isfinite(delivered), axis=(1, 2, 3)),
  }
  if lpips_fn is not None:
    try:
      out['lpips'] = lpips_fn(a, b)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('LPIPS not computed for this batch (%s: %s)', type(e).__name__, e)
  return distributed.unreplicate_to_host(out)


def _write_image(job: _Job, it: InputItem, j: int, host: dict, cfg_json: str, seconds: float) -> None:
  if not host['finite'][j]:
    _record(job, it, status='error', error=f'{it.path}: inversion produced non-finite values', seconds=seconds)
    return
  hook = lambda: fault_point('write')
  imageio.atomic_write_bytes(job.out / f'{it.stem}.png', imageio.encode_png(host['delivered'][j]),
                             before_rename=hook)
  hist = host['loss_history'][j]
  buf = io.BytesIO()
  np.savez(buf, codes=host['codes'][j], weights=host['weights'][j],
           masks=np.zeros((0, 0), bool) if job.masks is None else np.asarray(job.masks),
           loss_history=hist, step=host['step'][j], key=image_keys(job.config.seed, [it.name])[0],
           name=np.array(it.name), config=np.array(cfg_json))
  imageio.atomic_write_bytes(job.out / f'{it.stem}.npz', buf.getvalue(), before_rename=hook)
  finite = hist[np.isfinite(hist)]
  # Non-finite metrics (PSNR of a perfect match is +inf) are stored as null: the manifest stays strict JSON.
  extra = {'psnr': _finite_or_none(host['psnr'][j]), 'ssim': _finite_or_none(host['ssim'][j]),
           'loss': float(finite[-1]) if finite.size else None}
  if 'lpips' in host:
    extra['lpips'] = _finite_or_none(host['lpips'][j])
  _record(job, it, status='ok', error=None, seconds=seconds, **extra)


def _record(job: _Job, it: InputItem, status: str, error: Optional[str], seconds: float, **extra) -> None:
  rec = {'name': it.name, 'stem': it.stem, 'path': it.path, 'status': status, 'error': error,
         'seconds': round(float(seconds), 4), 'process': job.process_index}
  rec.update(extra)
  if status != 'ok':
    logging.error('%s', error)
  job.manifest.append(rec)
  job.stats['ok' if status == 'ok' else 'failed'] += 1


def write_summary(out: epath.Path, items: Sequence[InputItem], wall: float, job: Optional[_Job] = None,
                  preempted: bool = False) -> dict:
  """Merges all manifests into ``manifest.jsonl`` (multi-process) and writes ``summary.json``."""
  merged: dict[str, dict] = {}
  for p in sorted(out.glob('manifest*.jsonl')):
    for r in read_jsonl(p)[0]:
      old = merged.get(r['name'])
      if old is None or (old.get('status') != 'ok' and r.get('status') == 'ok'):   # a retried success wins
        merged[r['name']] = r
  if job is not None and job.process_count > 1:
    imageio.atomic_write_bytes(out / MANIFEST, _jsonl(merged[k] for k in sorted(merged)))
  listed = {it.name for it in items}
  ok = [r for r in merged.values() if r.get('status') == 'ok']
  failed = [r for r in merged.values() if r.get('status') != 'ok']

  def mean(key):
    vals = [r[key] for r in ok if r.get(key) is not None and np.isfinite(r[key])]
    return float(np.mean(vals)) if vals else None

  steps = job.stats['steps'] if job is not None else 0
  summary = {
      'total': len(listed), 'ok': len(ok), 'failed': len(failed),
      'pending': len(listed - set(merged)),
      'mean_psnr': mean('psnr'), 'mean_ssim': mean('ssim'), 'mean_lpips': mean('lpips'),
      'mean_seconds': mean('seconds'),
      'wall_seconds': round(wall, 3),
      'images_steps_per_second_process0': round(steps / wall, 3) if wall > 0 else None,
      'num_processes': job.process_count if job else 1,
      'num_devices_per_process': job.mesh.shape[distributed.DATA_AXIS] if job else None,
      'fingerprint': job.fingerprint if job else None,
      'preempted': preempted,
      'failures': [{'name': r['name'], 'error': r.get('error')} for r in sorted(failed, key=lambda r: r['name'])],
  }
  imageio.atomic_write_bytes(out / SUMMARY, json.dumps(summary, indent=1, sort_keys=True).encode())
  return summary


def format_summary(out_dir: str | os.PathLike, summary: dict, max_rows: int = 30) -> str:
  """A plain-text table: per-image rows (failed first, up to ``max_rows``) and the totals."""
  recs = read_jsonl(epath.Path(out_dir) / MANIFEST)[0]
  recs.sort(key=lambda r: (r.get('status') == 'ok', r['name']))
  lines = [f'{"name":40s} {"status":6s} {"psnr":>7s} {"ssim":>6s} {"sec":>7s}  error']
  for r in recs[:max_rows]:
    psnr = f'{r["psnr"]:7.2f}' if r.get('psnr') is not None else '      -'
    ssim = f'{r["ssim"]:6.3f}' if r.get('ssim') is not None else '     -'
    lines.append(f'{r["name"][:40]:40s} {r["status"]:6s} {psnr} {ssim} {r.get("seconds", 0):7.2f}  '
                 f'{r.get("error") or ""}')
  if len(recs) > max_rows:
    lines.append(f'... {len(recs) - max_rows} more rows in {epath.Path(out_dir) / MANIFEST}')
  fmt = lambda v, f: 'n/a' if v is None else format(v, f)
  lines.append(f'total {summary["total"]}: ok {summary["ok"]}, failed {summary["failed"]}, '
               f'pending {summary["pending"]} | mean PSNR {fmt(summary["mean_psnr"], ".2f")} dB, '
               f'SSIM {fmt(summary["mean_ssim"], ".4f")}, LPIPS {fmt(summary["mean_lpips"], ".4f")} | '
               f'wall {summary["wall_seconds"]:.1f} s' + (' | PREEMPTED: rerun to resume' if
                                                          summary.get('preempted') else ''))
  return '\n'.join(lines)
