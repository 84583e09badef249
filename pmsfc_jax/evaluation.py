"""Folder-against-folder evaluation (``launch.evaluate``): pairing by file name, metrics, CSV + markdown.

Pairing rule (documented in docs/metrics.md): images are the files directly inside each folder with an
image extension (png, jpg, jpeg, bmp, webp, tif, tiff; case-insensitive). A candidate belongs to the
reference whose stem it equals (``x.png`` <- ``x.png``, ``x.jpg``) or, failing that, whose stem it starts
with followed by ``_``, ``-`` or ``.`` (``x_inv.png``, ``x-result.png``, ``x.rec.png``). A candidate
matching several references goes to the longest stem (``1_01_inv.png`` -> ``1_01.png``, not ``1.png``).
If a reference gets several candidates, the exact-stem one wins; otherwise the pair is ambiguous and
listed as a problem. References without a candidate, unreadable files and ambiguous pairs are listed
and skipped (not fatal); candidates that match no reference are listed. A size mismatch between a
reference and its candidate is an error naming both files, unless ``resize=True`` (the candidate is
then resized to the reference's size with Lanczos / bicubic, and the row says so).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from typing import Optional, Sequence

import numpy as np
from etils import epath
from PIL import Image

from pmsfc_jax import imageio
from pmsfc_jax import metrics

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')
SEPARATORS = '_-.'


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
  return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir()),
                key=lambda p: p.name)


def _matches(stem: str, cand_stem: str) -> bool:
  return cand_stem == stem or (cand_stem.startswith(stem) and len(cand_stem) > len(stem)
                               and cand_stem[len(stem)] in SEPARATORS)


def pair_files(references: Sequence[epath.Path], candidates: Sequence[epath.Path]
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
  pil = Image.fromarray(imageio.to_uint8(img))
  h, w = size_hw
  method = Image.LANCZOS if pil.size[0] * pil.size[1] > w * h else Image.BICUBIC
  return imageio.to_float(np.asarray(pil.resize((w, h), method)))


def load_pair(pair: Pair, resize: bool) -> Optional[tuple[np.ndarray, np.ndarray]]:
  """Decodes both images ([-1, 1]); sets ``pair.status`` and returns None when unreadable."""
  try:
    ref = imageio.load_image(pair.reference)
  except imageio.ImageDecodeError as e:
    pair.status = f'unreadable reference: {e.reason}'
    return None
  try:
    cand = imageio.load_image(pair.candidate)
  except imageio.ImageDecodeError as e:
    pair.status = f'unreadable candidate: {e.reason}'
    return None
  pair.size = ref.shape[:2]
  if cand.shape != ref.shape:
    if not resize:
      raise SizeMismatchError(
          f'size mismatch: reference {os.fspath(pair.reference)} is {ref.shape[1]}x{ref.shape[0]} but '
          f'candidate {os.fspath(pair.candidate)} is {cand.shape[1]}x{cand.shape[0]} (pass --resize to '
          'resize candidates to the reference size)')
    cand = _resize_to(cand, ref.shape[:2])
    pair.resized = True
  return ref, cand


def evaluate(reference_dir, candidate_dir, names: Sequence[str], resize: bool = False,
             batch_size: int = 16, niqe_model=None, log=print) -> tuple[list[Pair], list[epath.Path]]:
  """Pairs the folders and computes ``names`` per pair (values filled into each ``Pair``)."""
  unknown = [n for n in names if n not in metrics.METRICS]
  if unknown:
    raise ValueError(f'unknown metric(s) {unknown}; choose from {", ".join(metrics.METRICS)}')
  if not names:
    raise ValueError('no metric requested')
  if 'niqe' in names and not isinstance(niqe_model, metrics.NiqeModel):
    niqe_model = metrics.load_niqe_model(niqe_model)  # Fail before any work when it is missing.
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
  done = 0
  for shape, items in groups.items():
    for i in range(0, len(items), batch_size):
      chunk = items[i:i + batch_size]
      ref = np.stack([im[0] for _, im in chunk])
      cand = np.stack([im[1] for _, im in chunk])
      vals = metrics.compute([n for n in names if n != 'niqe'], ref, cand, signed=True)
      if 'niqe' in names:
        if (shape[0] // metrics.NIQE_BLOCK) * (shape[1] // metrics.NIQE_BLOCK) >= 2:
          vals['niqe'] = metrics.niqe(np.asarray(metrics.to_unit(cand)), niqe_model)
        else:
          vals['niqe'] = np.full(len(chunk), np.nan)
          for p, _ in chunk:
            p.status = f'ok (NIQE needs two 96x96 blocks, image is {shape[1]}x{shape[0]})'
      for j, (p, _) in enumerate(chunk):
        p.values = {n: float(vals[n][j]) for n in names}
      done += len(chunk)
      log(f'evaluated {done}/{len(loaded)} pairs')
  return pairs, unmatched


def _fmt(v: Optional[float]) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return ''
  return f'{v:.4f}'


def mean_row(pairs: Sequence[Pair], names: Sequence[str]) -> dict[str, Optional[float]]:
  out = {}
  for n in names:
    vals = [p.values[n] for p in pairs if n in p.values and np.isfinite(p.values[n])]
    out[n] = float(np.mean(vals)) if vals else None
  return out


def to_csv(pairs: Sequence[Pair], names: Sequence[str]) -> str:
  """One row per reference image plus a final ``mean`` row (over the evaluated pairs)."""
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator='\n')
  w.writerow(['reference', 'candidate', 'width', 'height', 'resized', 'status'] + list(names))
  for p in pairs:
    w.writerow([p.reference.name, p.candidate.name if p.candidate else '',
                p.size[1] if p.size else '', p.size[0] if p.size else '', int(p.resized), p.status]
               + [_fmt(p.values.get(n)) for n in names])
  ok = sum(1 for p in pairs if p.values)
  w.writerow(['mean', f'{ok} pairs', '', '', '', ''] + [_fmt(v) for v in mean_row(pairs, names).values()])
  return buf.getvalue()


def to_markdown(pairs: Sequence[Pair], names: Sequence[str], max_rows: int = 50) -> str:
  header = '| image | ' + ' | '.join(names) + ' |'
  lines = [header, '|' + '---|' * (len(names) + 1)]
  shown = [p for p in pairs if p.values][:max_rows]
  for p in shown:
    lines.append(f'| {p.reference.name} | ' + ' | '.join(_fmt(p.values[n]) for n in names) + ' |')
  ok = sum(1 for p in pairs if p.values)
  if ok > len(shown):
    lines.append(f'| ... ({ok - len(shown)} more) |' + ' |' * len(names))
  lines.append(f'| **mean ({ok})** | ' + ' | '.join(_fmt(v) for v in mean_row(pairs, names).values()) + ' |')
  return '\n'.join(lines)
