"""The batch job's output folder: created after validation, locked, cleaned, fingerprinted, checked.

Order (nothing is written before the configuration and paths are validated, ``job.py``):

1. ``OUT`` is created (with missing parents) and its lock taken (``io/locks.py``: ``OUT/.lock``, or
   ``OUT/.lock.p<i>`` per process of a multi-host job, each process locking its own share's files) before
   anything else is written there; a second job on the same folder stops at once (exit status 75) and
   modifies nothing. If this run created ``OUT`` and fails before its configuration is recorded, the
   folder (and the parents it created) is removed again.
2. The leftovers of killed runs are removed (temporary result files, half-deleted checkpoint folders,
   checkpoint folders of another process count or mesh scope).
3. The configuration fingerprint is checked (``fingerprint.py``). With ``--overwrite_config`` the previous
   configuration's results go first: the PNG / NPZ / input thumbnail of every image in the old
   manifests, the summary and report, the
   batch checkpoints, then the manifests, and only then the new ``config.json`` is recorded; a kill in the
   middle leaves the old record, so the next run redoes the clean-up.
4. A manifest line saying ``ok`` whose PNG or NPZ is missing on disk is forgotten: the image is redone.

Several processes: each locks its own ``OUT/.lock.p<i>``, process 0 cleans and records, every process
checks the fingerprint, and they all fail alike (``multihost.Processes.all_or_none``). The folder must be
one every host sees (a shared file system, ``gs://``): the merged manifest and the summary are written by
process 0 from every process's manifest. :func:`check_shared` refuses (exit 2, one line naming the host)
a run in which some process does not see the ``config.json`` process 0 recorded (hosts with only local
disks), instead of scattering the results over the hosts' disks.
"""

from __future__ import annotations

import json
import re
import time
from typing import Sequence

from absl import logging
from etils import epath

from pmsfc_jax.core import config
from pmsfc_jax.io import files
from pmsfc_jax.io import listing
from pmsfc_jax.io import locks
from pmsfc_jax.jobs import multihost
from pmsfc_jax.jobs.invert import batch_state
from pmsfc_jax.jobs.invert import fingerprint
from pmsfc_jax.jobs.invert import manifest
from pmsfc_jax.jobs.invert import report
from pmsfc_jax.jobs.invert import results
from pmsfc_jax.jobs.invert import summary as summary_lib

RESULT_SUFFIXES = ('.png', '.npz')
SHARED_WAIT_S = 30.0  # how long a process waits to see process 0's config.json (NFS attribute caches)
_STEM = re.compile(r'[A-Za-z0-9_+=@-][A-Za-z0-9._+=@-]*')  # what listing._name_stem can produce


def lock_name(process_index: int, process_count: int) -> str:
  return '.lock' if process_count == 1 else f'.lock.p{process_index}'


def _missing_ancestors(path: epath.Path) -> list[epath.Path]:
  """``path`` and its missing parents, deepest first."""
  out = []
  while not path.exists() and path != path.parent:
    out.append(path)
    path = path.parent
  return out


def clean_stale(out: epath.Path, procs: multihost.Processes) -> None:
  """Removes leftovers of killed runs: temporary result files, half-deleted checkpoint folders, and
  checkpoint folders of another layout (``batch_state.remove_other_layouts``)."""
  for p in [*out.glob('.*'), *(out / results.INPUTS).glob('.*')]:
    if files.TMP_MARKER in p.name and not p.is_dir():
      p.unlink()
  for root in (out, out / batch_state.CHECKPOINTS):
    if root.exists():
      for p in root.glob(f'{files.TRASH_PREFIX}*'):
        p.rmtree() if p.is_dir() else p.unlink()
  batch_state.remove_other_layouts(out / batch_state.CHECKPOINTS, procs)


def remove_old_results(out: epath.Path) -> None:
  """The previous configuration's results (``--overwrite_config``), manifests last (module docstring).

  Stems come from the old manifest lines; only plain file names of this folder are removed."""
  paths = sorted(out.glob('manifest*.jsonl'))
  for p in paths:
    for rec in manifest.read_jsonl(p)[0]:
      stem = rec.get('stem')
      if isinstance(stem, str) and _STEM.fullmatch(stem):
        for path in [out / f'{stem}{suffix}' for suffix in RESULT_SUFFIXES] + [
          out / results.INPUTS / f'{stem}.png'
        ]:
          if path.is_file():
            path.unlink()
  for name in (summary_lib.SUMMARY, report.REPORT):
    if (out / name).exists():
      (out / name).unlink()
  files.remove_tree(out / batch_state.CHECKPOINTS)
  for p in paths:
    p.unlink()


def open_folder(
  cfg: config.InvertConfig, payload: dict, procs: multihost.Processes
) -> tuple[epath.Path, locks.FolderLock, str]:
  """Steps 1-3 of the module docstring -> (OUT, its held lock, the configuration digest).

  Raises ``locks.FolderLocked`` (another job holds the folder) or ``fingerprint.ConfigMismatchError``.
  """
  out = epath.Path(cfg.job.output_dir)
  created = _missing_ancestors(out) if files.is_local(out) else []
  out.mkdir(parents=True, exist_ok=True)
  lock = locks.FolderLock(out, lock_name(procs.index, procs.count)).acquire()
  recorded = False
  try:
    writer = procs.index == 0
    if writer:
      clean_stale(out, procs)
    # Every process checks (so a mismatch fails all of them, none waits at the barrier); process 0 writes.
    digest = fingerprint.check(
      out, payload, cfg.job.overwrite_config, writer, lambda: remove_old_results(out)
    )
    recorded = True
    return out, lock, digest
  finally:
    if not recorded:
      lock.release()
      if created and [p.name for p in out.iterdir()] == [lock.path.name]:
        lock.path.unlink()
        for p in created:  # deepest first; only folders this run created, and only if still empty
          if not any(p.iterdir()):
            p.rmdir()


def check_shared(out: epath.Path, digest: str, procs: multihost.Processes) -> None:
  """After process 0 recorded the configuration: every process must see it (module docstring), else
  every process raises the same one-line ``ConfigError``. Also the meeting point after the set-up."""
  if procs.count == 1:
    return
  deadline = time.monotonic() + SHARED_WAIT_S
  while True:
    try:
      seen = json.loads((out / fingerprint.CONFIG_RECORD).read_text()).get('fingerprint') == digest
    except (OSError, ValueError, AttributeError):
      seen = False
    if seen or time.monotonic() > deadline:
      break
    time.sleep(0.5)
  blind = [k for k, ok in enumerate(procs.gather(seen)) if not ok]
  if blind:
    raise config.ConfigError(
      f'--output_dir={out}: process {blind[0]} does not see the {fingerprint.CONFIG_RECORD} process 0 '
      'recorded there: on several hosts the output folder must be one they all see (a shared file system '
      'or gs://)'
    )


def missing_results(out: epath.Path, done: dict, items: Sequence[listing.InputItem]) -> list[str]:
  """Names recorded ``ok`` whose PNG or NPZ (under the current listing's stem) is not in ``out``."""
  on_disk = {p.name for p in out.iterdir()}
  return [
    it.name
    for it in items
    if (done.get(it.name) or {}).get('status') == 'ok'
    and not all(f'{it.stem}{s}' in on_disk for s in RESULT_SUFFIXES)
  ]


def forget_missing(
  job_manifest: manifest.Manifest, done: dict, items: Sequence[listing.InputItem], out: epath.Path
) -> set[str]:
  """Step 4: drops the ``ok`` lines of results missing on disk; returns their names (to redo)."""
  missing = set(missing_results(out, done, items))
  if missing:
    logging.warning(
      '%d result(s) recorded as ok are missing on disk: redoing them (%s)', len(missing), sorted(missing)[:5]
    )
    job_manifest.forget(missing)
  return missing
