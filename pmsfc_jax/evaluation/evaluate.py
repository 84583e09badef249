"""Folder-against-folder evaluation (``launch.evaluate``): pairing by file name, metrics, CSV + markdown.

Pairing rule (documented in docs/metrics.md): images are the files directly inside each folder with an
image extension (``io.images.IMAGE_EXTENSIONS``, case-insensitive). A candidate belongs to the
reference whose stem it equals (``x.png`` <- ``x.png``, ``x.jpg``) or, failing that, whose stem it starts
with followed by ``_``, ``-`` or ``.`` (``x_inv.png``, ``x-result.png``, ``x.rec.png``). A candidate
matching several references goes to the longest stem (``1_01_inv.png`` -> ``1_01.png``, not ``1.png``).
If a reference gets several candidates, the exact-stem one wins; otherwise the pair is ambiguous and
listed as a problem. References without a candidate, unreadable files and ambiguous pairs are listed
and skipped (not fatal); candidates that match no reference are listed. A size mismatch between a
reference and its candidate is an error naming both files, unless ``resize=True`` (the candidate is
then resized to the reference's size with Lanczos / bicubic, and the row says so).

PSNR of identical images is +inf. One rule, used here and by the batch job's summary
(``jobs/invert/summary.py``): a value is reported as ``inf`` (CSV / markdown ``inf``, JSON the string
``"inf"``, :func:`to_json`); a mean (:func:`mean_of`) is the mean of the finite values and says how many
infinite ones it left out (``31.20 (+1 inf)``); when every value is infinite the mean is ``inf``. NaN
values (a metric that could not be computed) are left out of means.

Exit status of ``launch.evaluate`` (:func:`run`): 0 when at least one pair was evaluated, 1 when none
was (every pair missing, unreadable or ambiguous); usage errors (unknown metric, missing folder, size
mismatch without ``--resize``) are ``ConfigError``: one line, status 2 (``jobs/exit_codes.py``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Optional, Sequence

import numpy as np
from etils import epath
from PIL import Image

from pmsfc_jax.core import config
from pmsfc_jax.evaluation import metrics
from pmsfc_jax.evaluation import niqe as niqe_lib
from pmsfc_jax.io import images
from pmsfc_jax.io import progress
from pmsfc_jax.io import tables

SEPARATORS = '_-.'
INF = 'inf'  # the JSON spelling of +inf (PSNR of identical images)
NOTHING_EVALUATED = 1  # exit status (jobs/exit_codes.SOME_FAILED; evaluation/ cannot import jobs/)


def to_json(value) -> Optional[float | str]:
  """A metric value for strict JSON: finite -> float, +inf -> ``"inf"``, NaN / -inf -> None."""
  x = float(np.asarray(value).reshape(()))
  return x if np.isfinite(x) else (INF if x == np.inf else None)


def from_json(value) -> Optional[float]:
  """Inverse of :func:`to_json` (None stays None)."""
  return None if value is None else float(value)


def mean_of(values: Sequence) -> tuple[Optional[float], int, int]:
  """(mean, number of finite values, number of +inf values) under the module's rule: the mean of the
  finite values, ``inf`` when all are infinite, None when there is no value."""
  vals = [v for v in (from_json(v) for v in values) if v is not None and not np.isnan(v)]
  finite = [v for v in vals if np.isfinite(v)]
  n_inf = sum(1 for v in vals if v == np.inf)
  mean = float(np.mean(finite)) if finite else (float('inf') if n_inf else None)
  return mean, len(finite), n_inf


def mean_text(mean: Optional[float], n_inf: int, fmt: str = '.2f') -> str:
  """``'31.20'``, ``'31.20 (+1 inf)'``, ``'inf'`` or ``'n/a'``."""
  if mean is None:
    return 'n/a'
  text = INF if mean == np.inf else format(mean, fmt)
  return text + (f' (+{n_inf} inf)' if n_inf and mean != np.inf else '')


class SizeMismatchError(ValueError):
  """A reference and its candidate differ in size (and resizing was not asked for)."""


@dataclasses.dataclass
class Pair:
  reference: epath.Path
  candidate: Optional[epath.Path] = None
  status: str = 'ok'
  values: dict = dataclasses.field(default_factory=dict)
  size: Optional[tuple[int, int]] = None
  resized: bool = False


def list_images(folder) -> list[epath.Path]:
  folder = epath.Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f'{folder} is not a directory')
  return sorted(
    (p for p in folder.iterdir() if p.suffix.lower() in images.IMAGE_EXTENSIONS and not p.is_dir()),
    key=lambda p: p.name,
  )


def _matches(stem: str, cand_stem: str) -> bool:
  return cand_stem == stem or (
    cand_stem.startswith(stem) and len(cand_stem) > len(stem) and cand_stem[len(stem)] in SEPARATORS
  )


def pair_files(
  references: Sequence[epath.Path], candidates: Sequence[epath.Path]
) -> tuple[list[Pair], list[epath.Path]]:
  """Applies the pairing rule; returns (pairs in reference order, unmatched candidates)."""
  stems = {}
  for r in references:
    stems.setdefault(r.stem, []).append(r)
  by_ref: dict[str, list[epath.Path]] = {r.name: [] for r in references}
  unmatched = []
  for c in candidates:
    owners = [s for s in stems if _matches(s, c.stem)]
    if not owners:
      unmatched.append(c)
      continue
    best = max(owners, key=len)
    for r in stems[best]:
      by_ref[r.name].append(c)
  pairs = []
  for r in references:
    cands = by_ref[r.name]
    if len(stems[r.stem]) > 1:
      same = [c for c in cands if c.name == r.name]
      cands = same
    if not cands:
      pairs.append(Pair(r, status='missing candidate'))
      continue
    if len(cands) > 1:
      exact = [c for c in cands if c.stem == r.stem]
      if len(exact) == 1:
        cands = exact
      else:
        pairs.append(Pair(r, status='ambiguous: ' + ', '.join(c.name for c in cands)))
        continue
    pairs.append(Pair(r, cands[0]))
  return pairs, unmatched


def _resize_to(img: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
  pil = Image.fromarray(images.to_uint8(img))
  h, w = size_hw
  method = Image.LANCZOS if pil.size[0] * pil.size[1] > w * h else Image.BICUBIC
  return images.to_float(np.asarray(pil.resize((w, h), method)))


def load_pair(pair: Pair, resize: bool) -> Optional[tuple[np.ndarray, np.ndarray]]:
  """Decodes both images ([-1, 1]); sets ``pair.status`` and returns None when unreadable."""
  try:
    ref = images.load_image(pair.reference)
  except images.ImageDecodeError as e:
    pair.status = f'unreadable reference: {e.reason}'
    return None
  try:
    cand = images.load_image(pair.candidate)
  except images.ImageDecodeError as e:
    pair.status = f'unreadable candidate: {e.reason}'
    return None
  pair.size = ref.shape[:2]
  if cand.shape != ref.shape:
    if not resize:
      raise SizeMismatchError(
        f'size mismatch: reference {os.fspath(pair.reference)} is {ref.shape[1]}x{ref.shape[0]} but '
        f'candidate {os.fspath(pair.candidate)} is {cand.shape[1]}x{cand.shape[0]} (pass --resize to '
        'resize candidates to the reference size)'
      )
    cand = _resize_to(cand, ref.shape[:2])
    pair.resized = True
  return ref, cand


def evaluate(
  reference_dir,
  candidate_dir,
  names: Sequence[str],
  resize: bool = False,
  batch_size: int = 16,
  niqe_model=None,
  log_every_s: float = 30.0,
) -> tuple[list[Pair], list[epath.Path]]:
  """Pairs the folders and computes ``names`` per pair (values filled into each ``Pair``)."""
  unknown = [n for n in names if n not in metrics.METRICS]
  if unknown:
    raise ValueError(f'unknown metric(s) {unknown}; choose from {", ".join(metrics.METRICS)}')
  if not names:
    raise ValueError('no metric requested')
  if 'niqe' in names and not isinstance(niqe_model, niqe_lib.NiqeModel):
    niqe_model = niqe_lib.load_niqe_model(niqe_model)  # Fail before any work when it is missing.
  pairs, unmatched = pair_files(list_images(reference_dir), list_images(candidate_dir))
  loaded = []
  for p in pairs:
    if p.status == 'ok':
      imgs = load_pair(p, resize)
      if imgs is not None:
        loaded.append((p, imgs))
  groups: dict[tuple, list] = {}
  for p, imgs in loaded:
    groups.setdefault(imgs[0].shape, []).append((p, imgs))
  report = progress.Progress(len(loaded), 'evaluated', 'pairs', log_every_s)
  for shape, items in groups.items():
    for i in range(0, len(items), batch_size):
      chunk = items[i : i + batch_size]
      ref = np.stack([im[0] for _, im in chunk])
      cand = np.stack([im[1] for _, im in chunk])
      vals = metrics.compute([n for n in names if n != 'niqe'], ref, cand, signed=True)
      if 'niqe' in names:
        if (shape[0] // niqe_lib.NIQE_BLOCK) * (shape[1] // niqe_lib.NIQE_BLOCK) >= 2:
          vals['niqe'] = niqe_lib.niqe(np.asarray(metrics.to_unit(cand)), niqe_model)
        else:
          vals['niqe'] = np.full(len(chunk), np.nan)
          for p, _ in chunk:
            p.status = f'ok (NIQE needs two 96x96 blocks, image is {shape[1]}x{shape[0]})'
      for j, (p, _) in enumerate(chunk):
        p.values = {n: float(vals[n][j]) for n in names}
      report.update(len(chunk))
  report.close()
  return pairs, unmatched


def mean_row(pairs: Sequence[Pair], names: Sequence[str]) -> dict[str, tuple[Optional[float], int, int]]:
  """metric -> :func:`mean_of` over the evaluated pairs."""
  return {n: mean_of([p.values[n] for p in pairs if n in p.values]) for n in names}


def _inf_note(means: dict) -> str:
  return '; '.join(
    f'{n}: {k} infinite value(s) not in the mean' for n, (m, _, k) in means.items() if k and m != np.inf
  )


def to_csv(pairs: Sequence[Pair], names: Sequence[str]) -> str:
  """One row per reference image plus a final ``mean`` row (over the evaluated pairs; infinite values
  left out and counted in its status column, module docstring)."""
  rows = [
    [
      p.reference.name,
      p.candidate.name if p.candidate else '',
      p.size[1] if p.size else '',
      p.size[0] if p.size else '',
      int(p.resized),
      p.status,
    ]
    + [p.values.get(n) for n in names]
    for p in pairs
  ]
  ok = sum(1 for p in pairs if p.values)
  means = mean_row(pairs, names)
  rows.append(['mean', f'{ok} pairs', '', '', '', _inf_note(means)] + [m for m, _, _ in means.values()])
  return tables.csv_text(['reference', 'candidate', 'width', 'height', 'resized', 'status', *names], rows)


def to_markdown(pairs: Sequence[Pair], names: Sequence[str], max_rows: int = 50) -> str:
  shown = [p for p in pairs if p.values][:max_rows]
  rows = [[p.reference.name] + [p.values[n] for n in names] for p in shown]
  ok = sum(1 for p in pairs if p.values)
  if ok > len(shown):
    rows.append([f'... ({ok - len(shown)} more)'] + [''] * len(names))
  rows.append([f'**mean ({ok})**'] + [mean_text(m, k, '.4f') for m, _, k in mean_row(pairs, names).values()])
  return tables.markdown(['image', *names], rows)


def run(
  reference_dir: str,
  candidate_dir: str,
  output: str,
  metrics_names: Sequence[str] = ('psnr', 'ssim', 'lpips_vgg'),
  resize: bool = False,
  batch_size: int = 16,
  niqe_model: Optional[str] = None,
  max_table_rows: int = 50,
) -> int:
  """``launch.evaluate``: evaluates, writes the CSV, prints the markdown table and the problems.

  Returns the exit status (module docstring): 0, or 1 when no pair was evaluated; usage errors raise
  ``config.ConfigError`` (one line, status 2)."""
  names = [m.strip() for m in metrics_names if m.strip()]
  try:
    pairs, unmatched = evaluate(
      reference_dir, candidate_dir, names, resize=resize, batch_size=batch_size, niqe_model=niqe_model
    )
  except (SizeMismatchError, ValueError, FileNotFoundError) as e:
    raise config.ConfigError(str(e)) from None
  out = epath.Path(output)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(to_csv(pairs, names))
  print(to_markdown(pairs, names, max_table_rows))
  problems = [p for p in pairs if not p.values]
  if problems or unmatched:
    print('\nNot evaluated:')
    for p in problems:
      print(f'- {p.reference.name}: {p.status}')
    for c in unmatched:
      print(f'- candidate {c.name}: matches no reference')
  evaluated = sum(1 for p in pairs if p.values)
  print(f'\nwrote {out} ({evaluated} of {len(pairs)} pairs evaluated)')
  if not evaluated:
    print(f'error: no pair of {reference_dir} and {candidate_dir} could be evaluated', file=sys.stderr)
    return NOTHING_EVALUATED
  return 0
