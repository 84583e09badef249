"""The end of a batch-job run: all manifests merged (multi-process), ``OUT/summary.json``, the printed
table (failed images first) and ``OUT/report.html`` (``report.py``; :func:`rebuild_report` for
``launch.report``).

Means follow ``evaluation/evaluate.py``'s rule: the mean of the finite values, with the count of infinite
ones beside it (``psnr_infinite``: images reproduced exactly, PSNR +inf); ``"inf"`` when all are.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

from etils import epath

from pmsfc_jax.core import config
from pmsfc_jax.evaluation import evaluate
from pmsfc_jax.io import files
from pmsfc_jax.io import listing
from pmsfc_jax.jobs.invert import context
from pmsfc_jax.jobs.invert import manifest
from pmsfc_jax.jobs.invert import report

SUMMARY = 'summary.json'


def write_summary(
  out: epath.Path,
  items: Sequence[listing.InputItem],
  wall: float,
  job: Optional[context.Job] = None,
  preempted: bool = False,
  all_steps: Optional[int] = None,
) -> dict:
  """Merges all manifests into ``manifest.jsonl`` (multi-process), writes ``summary.json`` (``all_steps``:
  images*steps of every process, default this process's) and ``report.html`` (``report.py``)."""
  merged = merged_records(out)
  if job is not None and job.process_count > 1:
    files.atomic_write_bytes(out / manifest.MANIFEST, manifest.jsonl(merged[k] for k in sorted(merged)))
  listed = {it.name for it in items}
  ok = [r for r in merged.values() if r.get('status') == 'ok']
  failed = [r for r in merged.values() if r.get('status') != 'ok']

  def mean(key):
    return evaluate.mean_of([r.get(key) for r in ok])

  psnr, _, psnr_inf = mean('psnr')

  steps = job.stats['steps'] if job is not None else 0
  all_steps = steps if all_steps is None else all_steps
  summary = {
    'total': len(listed),
    'ok': len(ok),
    'failed': len(failed),
    'pending': len(listed - set(merged)),
    'mean_psnr': evaluate.to_json(psnr) if psnr is not None else None,
    'psnr_infinite': psnr_inf,
    'mean_ssim': mean('ssim')[0],
    'mean_lpips': mean('lpips')[0],
    'mean_seconds': mean('seconds')[0],
    'wall_seconds': round(wall, 3),
    'images_steps_per_second_process0': round(steps / wall, 3) if wall > 0 else None,
    'images_steps_per_second': round(all_steps / wall, 3) if wall > 0 else None,
    'num_processes': job.process_count if job else 1,
    'num_devices_per_process': len(job.mesh.local_devices) if job else None,
    'mesh': ('global' if job.procs.lockstep else 'local') if job else None,
    'fingerprint': job.fingerprint if job else None,
    'preempted': preempted,
    'failures': [
      {'name': r['name'], 'error': r.get('error')} for r in sorted(failed, key=lambda r: r['name'])
    ],
  }
  files.write_json(out / SUMMARY, summary)
  report.write(out, [merged[k] for k in sorted(merged)], summary)
  return summary


def merged_records(out: epath.Path) -> dict[str, dict]:
  """name -> record over every manifest file of ``out`` (a retried success wins over an error)."""
  merged: dict[str, dict] = {}
  for p in sorted(out.glob('manifest*.jsonl')):
    for r in manifest.read_jsonl(p)[0]:
      old = merged.get(r['name'])
      if old is None or (old.get('status') != 'ok' and r.get('status') == 'ok'):
        merged[r['name']] = r
  return merged


def rebuild_report(out_dir: str | os.PathLike) -> epath.Path:
  """``launch.report``: rewrites ``OUT/report.html`` from the manifests and ``summary.json`` on disk.

  Raises ``config.ConfigError`` naming ``--output_dir`` when it holds no batch-job manifest."""
  out = epath.Path(out_dir)
  merged = merged_records(out) if out.is_dir() else {}
  if not merged and not (out.is_dir() and any(out.glob('manifest*.jsonl'))):
    raise config.ConfigError(f'--output_dir={out_dir}: no manifest.jsonl of a launch.invert job in it')
  summary = None
  if (out / SUMMARY).exists():
    try:
      summary = json.loads((out / SUMMARY).read_text())
    except ValueError:  # a torn summary: the counts come from the manifest alone
      summary = None
  return report.write(
    out, [merged[k] for k in sorted(merged)], summary if isinstance(summary, dict) else None
  )


def format_summary(out_dir: str | os.PathLike, summary: dict, max_rows: int = 30) -> str:
  """A plain-text table: per-image rows (failed first, up to ``max_rows``) and the totals."""
  recs = manifest.read_jsonl(epath.Path(out_dir) / manifest.MANIFEST)[0]
  recs.sort(key=lambda r: (r.get('status') == 'ok', r['name']))
  lines = [f'{"name":40s} {"status":6s} {"psnr":>7s} {"ssim":>6s} {"sec":>7s}  error']
  for r in recs[:max_rows]:
    psnr = f'{evaluate.from_json(r["psnr"]):7.2f}' if r.get('psnr') is not None else '      -'
    ssim = f'{r["ssim"]:6.3f}' if r.get('ssim') is not None else '     -'
    lines.append(
      f'{r["name"][:40]:40s} {r["status"]:6s} {psnr} {ssim} {r.get("seconds", 0):7.2f}  '
      f'{r.get("error") or ""}'
    )
  if len(recs) > max_rows:
    lines.append(f'... {len(recs) - max_rows} more rows in {epath.Path(out_dir) / manifest.MANIFEST}')
  fmt = lambda v, f: 'n/a' if v is None else format(v, f)
  lines.append(
    f'total {summary["total"]}: ok {summary["ok"]}, failed {summary["failed"]}, '
    f'pending {summary["pending"]} | mean PSNR '
    f'{evaluate.mean_text(evaluate.from_json(summary["mean_psnr"]), summary.get("psnr_infinite", 0))} dB, '
    f'SSIM {fmt(summary["mean_ssim"], ".4f")}, LPIPS {fmt(summary["mean_lpips"], ".4f")} | '
    f'wall {summary["wall_seconds"]:.1f} s'
    + (' | PREEMPTED: rerun to resume' if summary.get('preempted') else '')
  )
  return '\n'.join(lines)
