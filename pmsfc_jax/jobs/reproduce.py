"""Small-scale reproduction of the paper's tables on held-out CelebA faces with the shipped demo model.

mGANprior vs PmSFC at equal iterations and the same per-image keys, on the held-out faces
``celeba_small/009001.jpg ...`` (never seen in training), decoded and framed exactly like the training data
(centre square crop, resize to the generator's resolution):

* reconstruction (Table 1): PSNR, SSIM, LPIPS-VGG of the result against the face;
* colorization (Table 2): input = grayscale face; AuC (percent) of the delivered image (input luminance +
  estimated chroma) against the colour face, plus PSNR;
* 4x super-resolution (Table 3): input = the face downsampled 4x; PSNR, LPIPS of the result vs the face;
* inpainting: input = the face with the holes of an mGANprior mask (white = hole) zeroed; PSNR, SSIM,
  LPIPS of the delivered image (known pixels kept, holes from the estimate) vs the face.

Writes ``OUT/reproduction.md`` (the markdown table that goes into the README, with the command and config),
``OUT/reproduction.json`` (per-image values) and ``OUT/<task>_grid.png`` (first images: input | target |
mGANprior | PmSFC). The config is ``config.ReproduceConfig`` (``presets.reproduce``).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
from etils import epath

from pmsfc_jax.core import config
from pmsfc_jax.core import degradations
from pmsfc_jax.evaluation import metrics
from pmsfc_jax.io import files
from pmsfc_jax.io import images
from pmsfc_jax.io import listing
from pmsfc_jax.io import masks
from pmsfc_jax.io import progress
from pmsfc_jax.io import tables
from pmsfc_jax.jobs import compare
from pmsfc_jax.jobs import demo

TASK_METRICS = {
  'reconstruct': ('psnr', 'ssim', 'lpips'),
  'colorize': ('auc', 'psnr'),
  'super_resolve': ('psnr', 'lpips'),
  'inpaint': ('psnr', 'ssim', 'lpips'),
}


def load_faces(cfg: config.ReproduceConfig, size: int) -> tuple[list[str], np.ndarray]:
  items = listing.list_inputs(cfg.job.images)
  r = cfg.reproduce
  items = items[r.first_image : r.first_image + r.num_images]
  if len(items) < r.num_images:
    raise ValueError(
      f'--images={cfg.job.images!r} lists {len(items)} images after '
      f'first_image={r.first_image}, fewer than num_images={r.num_images}'
    )
  return [it.stem for it in items], np.stack([images.load_image(it.path, size) for it in items])


def task_inputs(task: config.Task, faces: np.ndarray, size: int):
  """(inputs the method sees, aux) for ``task`` from the ground-truth faces."""
  known = None
  if task.name == 'inpaint':
    k = np.asarray(masks.load_inpainting_mask(task.mask, size), np.float32)
    k = k.reshape(size, size, 1)
    known = np.broadcast_to(k[None], (len(faces), size, size, 1))
  inputs = np.asarray(degradations.prepare_target(faces, task, known))
  return inputs, known


def task_metrics(task: str, faces: np.ndarray, delivered: np.ndarray, lpips_net) -> dict[str, np.ndarray]:
  """Per-image values of ``TASK_METRICS[task]`` of the delivered results against the ground-truth faces."""
  names = TASK_METRICS[task]
  m = compare.image_metrics(faces, delivered, lpips_net if 'lpips' in names else None)
  if 'auc' in names:
    m['auc'] = np.asarray(metrics.colorization_auc((faces + 1) / 2, (np.clip(delivered, -1, 1) + 1) / 2))
  return {k: m[k] for k in names}


def task_config(cfg: config.ReproduceConfig, task: str) -> config.ReproduceConfig:
  """``cfg`` for one task (inpainting with mGANprior's VGG weight)."""
  loss = cfg.loss
  if task == 'inpaint':
    loss = dataclasses.replace(loss, perceptual_weight=cfg.reproduce.inpaint_perceptual_weight)
  return dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, name=task), loss=loss)


def run(cfg: Any) -> dict:
  """Runs every task of ``cfg.reproduce.tasks`` with both methods (see the module docstring)."""
  cfg = config.parse(config.ReproduceConfig, cfg)
  out = epath.Path(cfg.job.output_dir)
  out.mkdir(parents=True, exist_ok=True)
  gen, sub, percep = demo.load_models(cfg)
  size = gen.config.resolution
  names, faces = load_faces(cfg, size)
  keys_all = listing.image_keys(cfg.seed, names)
  lpips_net = metrics.load_lpips('vgg')
  results, per_image = {}, {}
  t_start = time.time()
  b = cfg.job.batch_size
  report = progress.Progress(len(cfg.reproduce.tasks) * len(faces), 'reproduction', 'images', log_every_s=0)
  for task in cfg.reproduce.tasks:
    tcfg = task_config(cfg, task)
    inputs, known = task_inputs(tcfg.task, faces, size)
    delivered = {m: [] for m in cfg.compare.methods}
    seconds = {m: 0.0 for m in cfg.compare.methods}
    for lo in range(0, len(faces), b):
      sl = slice(lo, lo + b)
      aux = None if known is None else known[sl]
      runs = compare.compare_methods(gen, sub.masks, percep, inputs[sl], tcfg, keys_all[sl], aux)
      for m in cfg.compare.methods:
        delivered[m].append(runs[m].delivered)
        seconds[m] += runs['seconds'][m]
      report.update(len(inputs[sl]), info=task)
    results[task] = {}
    per_image[task] = {}
    for m in cfg.compare.methods:
      d = np.concatenate(delivered[m])
      vals = task_metrics(task, faces, d, lpips_net)
      results[task][m] = {k: float(np.mean(v)) for k, v in vals.items()}
      results[task][m]['seconds'] = seconds[m]
      per_image[task][m] = {k: v.tolist() for k, v in vals.items()}
      delivered[m] = d
    n = min(cfg.reproduce.grid_images, len(faces))
    panels = [inputs[:n] if task != 'super_resolve' else _upsample(inputs[:n], size), faces[:n]]
    panels += [np.clip(delivered[m][:n], -1, 1) for m in cfg.compare.methods]
    grid = images.make_grid(np.stack(panels, 1).reshape(-1, size, size, 3), ncols=len(panels))
    images.save_image(out / f'{task}_grid.png', np.repeat(np.repeat(grid, 2, 0), 2, 1))
  table = format_table(results, cfg, names)
  blob = {
    'results': results,
    'per_image': per_image,
    'images': names,
    'wall_seconds': time.time() - t_start,
    'config': config.to_dict(cfg),
  }
  files.write_json(out / 'reproduction.json', blob)
  files.atomic_write_bytes(out / 'reproduction.md', table.encode())
  print(table)
  return blob


def _upsample(x: np.ndarray, size: int) -> np.ndarray:
  f = size // x.shape[1]
  return np.repeat(np.repeat(x, f, 1), f, 2)


def format_table(results: dict, cfg: config.ReproduceConfig, names) -> str:
  intro = (
    f'{len(names)} held-out faces ({names[0]} .. {names[-1]}), {cfg.optim.iterations} iterations per '
    f'method, Adam lr {cfg.optim.lr}, layer {cfg.model.layer}, PmSFC R = subspaces of '
    f'`{cfg.model.subspaces}`, K = {cfg.compare.num_codes_pmsfc}; mGANprior N = '
    f'{cfg.compare.num_codes_mganprior}.'
  )
  arrows = {'psnr': 'PSNR (dB) ↑', 'ssim': 'SSIM ↑', 'lpips': 'LPIPS-VGG ↓', 'auc': 'AuC (%) ↑'}
  titles = {
    'reconstruct': 'reconstruction',
    'colorize': 'colorization',
    'super_resolve': f'{cfg.task.factor}x super-resolution',
    'inpaint': 'inpainting',
  }
  rows = [
    [titles[task], arrows[k]] + [float(by_method[m][k]) for m in ('mganprior', 'pmsfc')]
    for task, by_method in results.items()
    for k in TASK_METRICS[task]
  ]
  return intro + '\n\n' + tables.markdown(['task', 'metric', 'mGANprior', 'PmSFC'], rows) + '\n'
