"""Per-image results of a finished batch: metrics against the target, ``OUT/<stem>.png`` / ``.npz`` (with
``task.align='face'`` its ``alignment`` record, for ``launch.paste``), ``OUT/inputs/<stem>.png`` (the input
as inverted) and the image's manifest line (written last: the commit).

Metrics compare the delivered image with the input at the input's resolution (super_resolve: the result
downsampled by the task's P against the low-resolution input). The manifest stays strict JSON: PSNR of
a perfect match (+inf) is stored as the string ``"inf"``, other non-finite values as null (the one rule
of ``evaluation/evaluate.py``, also used by the summary).
"""

from __future__ import annotations

import io
import json
from typing import Any, Optional

import jax.numpy as jnp
import numpy as np
from absl import logging

from pmsfc_jax.core import config
from pmsfc_jax.core import degradations
from pmsfc_jax.core import mesh
from pmsfc_jax.evaluation import evaluate
from pmsfc_jax.evaluation import metrics
from pmsfc_jax.io import files
from pmsfc_jax.io import images
from pmsfc_jax.io import listing
from pmsfc_jax.jobs.invert import context

INPUTS = 'inputs'  # OUT/inputs/<stem>.png: each input as inverted (decoded, aligned, resized)


def host_results(job: context.Job, result, targets) -> dict:
  """Device results -> numpy, plus per-image metrics against the target (documented in docs/)."""
  task = job.cfg.task
  delivered = result.delivered
  compare = delivered
  if task.name == 'super_resolve':
    compare = degradations.downsample(delivered, task.factor, task.downsample)
  a = jnp.clip((compare + 1.0) / 2.0, 0.0, 1.0)
  b = jnp.clip((targets + 1.0) / 2.0, 0.0, 1.0)
  out = {
    'delivered': delivered,
    'codes': result.codes,
    'weights': result.weights,
    'loss_history': result.loss_history,
    'step': result.step,
    'psnr': metrics.psnr(a, b),
    'ssim': metrics.ssim(a, b),
    'finite': jnp.all(jnp.isfinite(delivered), axis=(1, 2, 3)),
    'target': targets,
  }
  if job.cfg.job.lpips:
    try:
      out['lpips'] = metrics.lpips(a, b)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('LPIPS not computed for this batch (%s: %s)', type(e).__name__, e)
  return mesh.to_host(out)


def write_image(job: context.Job, it: listing.InputItem, j: int, host: dict, seconds: float) -> None:
  """Writes image ``j`` of a batch (PNG, NPZ) and records it."""
  if not host['finite'][j]:
    record(job, it, status='error', error=f'{it.path}: inversion produced non-finite values', seconds=seconds)
    return
  files.atomic_write_bytes(job.out / f'{it.stem}.png', images.encode_png(host['delivered'][j]))
  # The input as the job inverted it (decoded, aligned, resized): the report's thumbnail.
  files.atomic_write_bytes(job.out / INPUTS / f'{it.stem}.png', images.encode_png(host['target'][j]))
  hist = host['loss_history'][j]
  aligned = job.alignments.get(it.name)
  buf = io.BytesIO()
  np.savez(
    buf,
    **({} if aligned is None else {'alignment': np.array(json.dumps(aligned, sort_keys=True))}),
    codes=host['codes'][j],
    weights=host['weights'][j],
    masks=np.zeros((0, 0), bool) if job.masks is None else np.asarray(job.masks),
    loss_history=hist,
    step=host['step'][j],
    key=listing.image_keys(job.cfg.seed, [it.name])[0],
    name=np.array(it.name),
    config=np.array(json.dumps(config.to_dict(job.cfg), sort_keys=True)),
  )
  files.atomic_write_bytes(job.out / f'{it.stem}.npz', buf.getvalue())
  finite = hist[np.isfinite(hist)]
  extra = {
    'psnr': evaluate.to_json(host['psnr'][j]),
    'ssim': evaluate.to_json(host['ssim'][j]),
    'loss': float(finite[-1]) if finite.size else None,
    'steps': int(host['step'][j]),  # optimisation steps taken (fewer than optim.iterations: early stop)
  }
  if aligned is not None:
    extra['faces'] = aligned['faces']
  if 'lpips' in host:
    extra['lpips'] = evaluate.to_json(host['lpips'][j])
  record(job, it, status='ok', error=None, seconds=seconds, **extra)


def record(
  job: context.Job, it: listing.InputItem, status: str, error: Optional[str], seconds: float, **extra: Any
) -> None:
  """Appends the image's manifest line (the commit) and counts it."""
  rec = {
    'name': it.name,
    'stem': it.stem,
    'path': it.path,
    'status': status,
    'error': error,
    'seconds': round(float(seconds), 4),
    'process': job.process_index,
  }
  rec.update(extra)
  if status != 'ok':
    logging.error('%s', error)
  job.manifest.append(rec)
  job.stats['ok' if status == 'ok' else 'failed'] += 1
