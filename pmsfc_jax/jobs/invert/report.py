"""``OUT/report.html``: every image of a batch job on one static page a person can browse.

Written by the summary writer at the end of every run (a rerun and a preempted run included), from the
manifest lines on disk, so it always shows what the folder holds; ``launch.report --output_dir=OUT``
rebuilds it alone (``summary.rebuild_report``). One self-contained file: the rows are JSON inside the page,
the style and script (``pmsfc_jax/assets/report/``, written for this page) are inlined; thumbnails are
relative links to the results beside it (``<stem>.png``) and to the inputs as the job inverted them
(``inputs/<stem>.png``; for an image that failed before that, the original file when it is local and a
browser shows its format). It opens from the disk with no server and no network.

The page shows the counts by status, the mean ± standard deviation of each metric over the images that
succeeded (PSNR over its finite values, the infinite ones counted beside it), and a table of every
image: input and result side by side, PSNR, SSIM, LPIPS (when measured), final loss, steps, seconds,
faces found (face alignment) and the error of a failed image. The table sorts by any column (click its
title; again to reverse) and starts worst first (failed images, then by increasing PSNR); it shows one
page at a time (50 rows by default), so 10,000 rows stay quick: only the shown page is in the DOM and
its images load lazily. A hand-written script (about 150 lines, tested in headless Chromium) rather than
a table library: sorting and paging rows held in JSON is all the page needs, and the libraries that do it
(Tabulator, DataTables + jQuery, Grid.js) would add 50-400 kB to every report (docs/batch_inversion.md).
"""

from __future__ import annotations

import html
import json
import os
import urllib.parse
from importlib import resources
from typing import Any, Optional, Sequence

import numpy as np
from etils import epath

from pmsfc_jax.evaluation import evaluate
from pmsfc_jax.io import files
from pmsfc_jax.jobs.invert import results

REPORT = 'report.html'
METRICS = ('psnr', 'ssim', 'lpips', 'loss', 'steps', 'seconds')
BROWSER_FORMATS = ('.png', '.jpg', '.jpeg', '.gif', '.webp', '.bmp')


def _asset(name: str) -> str:
  return resources.files('pmsfc_jax').joinpath('assets', 'report', name).read_text()


def _url(path: str) -> str:
  return urllib.parse.quote(path.replace(os.sep, '/'))


def _input_thumb(out: epath.Path, rec: dict, on_disk: set[str]) -> Optional[str]:
  stem = rec.get('stem')
  if isinstance(stem, str) and f'{stem}.png' in on_disk:
    return _url(f'{results.INPUTS}/{stem}.png')
  path = rec.get('path')
  if isinstance(path, str) and files.is_local(path) and path.lower().endswith(BROWSER_FORMATS):
    return _url(os.path.relpath(os.path.abspath(path), os.path.abspath(os.fspath(out))))
  return None


def _number(value: Any) -> Optional[float]:
  """A manifest value as a float for the page (``"inf"`` -> 1e308, JSON's largest; absent -> None)."""
  try:
    v = evaluate.from_json(value)
  except (TypeError, ValueError):  # not a number: shown as absent
    return None
  if v is None or np.isnan(v):
    return None
  return 1e308 if np.isinf(v) else v


def rows(out: epath.Path, records: Sequence[dict]) -> list[dict]:
  """The table's rows: one per manifest record, with its thumbnails."""
  on_disk = {p.name for p in out.iterdir()} if out.exists() else set()
  inputs = {p.name for p in (out / results.INPUTS).iterdir()} if (out / results.INPUTS).exists() else set()
  table = []
  for r in records:
    stem = r.get('stem') if isinstance(r.get('stem'), str) else ''
    ok = r.get('status') == 'ok'
    table.append(
      {
        'name': str(r.get('name')),
        'status': 'ok' if ok else 'error',
        'error': r.get('error'),
        **{k: _number(r.get(k)) for k in METRICS},
        'faces': r.get('faces'),
        'result': _url(f'{stem}.png') if ok and f'{stem}.png' in on_disk else None,
        'input': _input_thumb(out, r, inputs),
      }
    )
  return table


def stats(records: Sequence[dict]) -> dict:
  """Mean ± sample sd (and count) of each metric over the images that succeeded; PSNR's infinite values
  are left out and counted (``evaluate.mean_of``'s rule)."""
  ok = [r for r in records if r.get('status') == 'ok']
  out = {}
  for k in METRICS:
    vals = np.asarray([v for v in (_number(r.get(k)) for r in ok) if v is not None], np.float64)
    finite = vals[vals < 1e308]
    if vals.size:
      out[k] = {
        'mean': float(finite.mean()) if finite.size else None,
        'sd': float(finite.std(ddof=1)) if finite.size > 1 else 0.0 if finite.size else None,
        'n': int(finite.size),
        'infinite': int(vals.size - finite.size),
      }
  return out


def write(
  out: epath.Path, records: Sequence[dict], summary: Optional[dict] = None, title: str = ''
) -> epath.Path:
  """Writes ``OUT/report.html`` (atomically) from the merged manifest ``records`` and the run's summary."""
  out = epath.Path(out)
  summary = summary or {}
  failed = sum(r.get('status') != 'ok' for r in records)
  counts = {
    'total': int(summary.get('total', len(records))),
    'ok': len(records) - failed,
    'error': failed,
    'pending': int(summary.get('pending', 0)),
  }
  data = {
    'title': title or f'Batch inversion report: {os.fspath(out)}',
    'counts': counts,
    'stats': stats(records),
    'rows': rows(out, records),
    'info': {
      k: summary.get(k) for k in ('fingerprint', 'wall_seconds', 'preempted', 'num_processes') if k in summary
    },
  }
  blob = json.dumps(data, sort_keys=True, allow_nan=False).replace('</', '<\\/')
  page = (
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
    f'<title>{html.escape(data["title"])}</title>\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    f'<style>\n{_asset("report.css")}</style>\n</head>\n<body>\n'
    f'<h1>{html.escape(data["title"])}</h1>\n'
    '<div id="counts"></div><div id="stats"></div><div id="pager"></div>\n'
    '<table id="rows"><thead></thead><tbody></tbody></table>\n'
    '<noscript>This report needs JavaScript to show its table.</noscript>\n'
    f'<script type="application/json" id="report-data">{blob}</script>\n'
    f'<script>\n{_asset("report.js")}</script>\n</body></html>\n'
  )
  files.atomic_write_bytes(out / REPORT, page.encode())
  return out / REPORT
