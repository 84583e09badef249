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
mGANprior | PmSFC).
"""

from __future__ import annotations

import json
import time

import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from pmsfc_jax import checkpoints
from pmsfc_jax import degradations
from pmsfc_jax import demo
from pmsfc_jax import discovery
from pmsfc_jax import imageio
from pmsfc_jax import inversion
from pmsfc_jax import losses
from pmsfc_jax import metrics
from pmsfc_jax import pipeline

TASK_METRICS = {
    'reconstruct': ('psnr', 'ssim', 'lpips'),
    'colorize': ('auc', 'psnr'),
    'super_resolve': ('psnr', 'lpips'),
    'inpaint': ('psnr', 'ssim', 'lpips'),
}


def load_faces(config, size: int) -> tuple[list[str], np.ndarray]:
  items = pipeline.list_inputs(config.images)
  items = items[config.first_image:config.first_image + config.num_images]
  if len(items) < config.num_images:
    raise ValueError(f'--images={config.images!r} lists {len(items)} images after '
                     f'first_image={config.first_image}, fewer than num_images={config.num_images}')
  return [it.stem for it in items], np.stack([imageio.load_image(it.path, size) for it in items])


def task_inputs(task: str, faces: np.ndarray, config, size: int):
  """(inputs the method sees, aux) for ``task`` from the ground-truth faces."""
  known = None
  if task == 'inpaint':
    k = np.asarray(degradations.load_inpainting_mask(config.mask, size), np.float32)
    k = k.reshape(size, size, 1)
    known = np.broadcast_to(k[None], (len(faces), size, size, 1))
  tcfg = {'task': task, 'factor': config.factor, 'downsample': config.downsample}
  inputs = np.asarray(degradations.prepare_target(faces, tcfg, known))
  return inputs, known


def task_metrics(task: str, faces: np.ndarray, delivered: np.ndarray, lpips_net) -> dict[str, np.ndarray]:
  """Per-image values of ``TASK_METRICS[task]`` of the delivered results against the ground-truth faces."""
  names = TASK_METRICS[task]
  m = demo.image_metrics(faces, delivered, lpips_net if 'lpips' in names else None)
  if 'auc' in names:
    m['auc'] = np.asarray(metrics.colorization_auc((faces + 1) / 2, (np.clip(delivered, -1, 1) + 1) / 2))
  return {k: m[k] for k in names}


def run(config: ml_collections.ConfigDict) -> dict:
  out = epath.Path(config.output_dir)
  out.mkdir(parents=True, exist_ok=True)
  gen = checkpoints.load_generator(config.generator)
  subspaces = discovery.load_subspaces(config.subspaces)
  size = gen.config.resolution
  names, faces = load_faces(config, size)
  keys_all = pipeline.image_keys(config.seed, names)
  percep = (losses.load_perceptual(inversion.perceptual_config(config))
            if config.perceptual_weight else None)
  lpips_net = metrics.load_lpips('vgg')
  results, per_image = {}, {}
  t_start = time.time()
  for task in config.tasks:
    tcfg = ml_collections.ConfigDict(config.to_dict())
    tcfg.task = task
    if task == 'inpaint':
      tcfg.perceptual_weight = config.inpaint_perceptual_weight
    inputs, known = task_inputs(task, faces, config, size)
    delivered = {m: [] for m in config.methods}
    seconds = {m: 0.0 for m in config.methods}
    for lo in range(0, len(faces), config.batch_size):
      sl = slice(lo, lo + config.batch_size)
      aux = None if known is None else known[sl]
      runs = demo.compare_methods(gen, subspaces.masks, percep, inputs[sl], tcfg, keys_all[sl], aux)
      for m in config.methods:
        delivered[m].append(runs[m].delivered)
        seconds[m] += runs['seconds'][m]
      logging.info('%s: %d/%d images (%.0f s so far)', task, min(lo + config.batch_size, len(faces)),
                   len(faces), time.time() - t_start)
    results[task] = {}
    per_image[task] = {}
    for m in config.methods:
      d = np.concatenate(delivered[m])
      vals = task_metrics(task, faces, d, lpips_net)
      results[task][m] = {k: float(np.mean(v)) for k, v in vals.items()}
      results[task][m]['seconds'] = seconds[m]
      per_image[task][m] = {k: v.tolist() for k, v in vals.items()}
      delivered[m] = d
    n = min(config.grid_images, len(faces))
    panels = [inputs[:n] if task != 'super_resolve' else _upsample(inputs[:n], size), faces[:n]]
    panels += [np.clip(delivered[m][:n], -1, 1) for m in config.methods]
    grid = imageio.make_grid(np.stack(panels, 1).reshape(-1, size, size, 3), ncols=len(panels))
    imageio.save_image(out / f'{task}_grid.png', np.repeat(np.repeat(grid, 2, 0), 2, 1))
  table = format_table(results, config, names)
  blob = {'results': results, 'per_image': per_image, 'images': names, 'wall_seconds': time.time() - t_start,
          'config': json.loads(config.to_json())}
  imageio.atomic_write_bytes(out / 'reproduction.json', json.dumps(blob, indent=1).encode())
  imageio.atomic_write_bytes(out / 'reproduction.md', table.encode())
  print(table)
  return blob


def _upsample(x: np.ndarray, size: int) -> np.ndarray:
  f = size // x.shape[1]
  return np.repeat(np.repeat(x, f, 1), f, 2)


def format_table(results: dict, config, names) -> str:
  lines = [f'{len(names)} held-out faces ({names[0]} .. {names[-1]}), '
           f'{config.iterations} iterations per method, Adam lr {config.lr}, layer {config.layer}, '
           f'PmSFC R = subspaces of `{config.subspaces}`, K = {config.num_codes_pmsfc}; '
           f'mGANprior N = {config.num_codes_mganprior}.', '',
           '| task | metric | mGANprior | PmSFC |', '|---|---|---|---|']
  arrows = {'psnr': 'PSNR (dB) ↑', 'ssim': 'SSIM ↑', 'lpips': 'LPIPS-VGG ↓', 'auc': 'AuC (%) ↑'}
  names = {'reconstruct': 'reconstruction', 'colorize': 'colorization',
           'super_resolve': f'{config.factor}x super-resolution', 'inpaint': 'inpainting'}
  for task, by_method in results.items():
    for k in TASK_METRICS[task]:
      vals = [by_method[m][k] for m in ('mganprior', 'pmsfc')]
      lines.append(f'| {names[task]} | {arrows[k]} | {vals[0]:.4f} | {vals[1]:.4f} |')
  return '\n'.join(lines) + '\n'
