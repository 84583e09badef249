"""The main job on the embedded default: mGANprior vs PmSFC on the shipped demo model, no user data needed.

``python -m launch.demo`` inverts

* a public-domain photo that ships inside scikit-image (``skimage.data.astronaut()``: NASA portrait of
  Eileen Collins, cropped to the face the way the aligned CelebA training faces are framed), and
* faces the demo generator itself produces from fixed seeds (in-domain targets),

with both methods at equal iterations, and writes ``OUT/demo_grid.png`` (one row per image:
target | mGANprior | PmSFC), ``OUT/metrics.md`` / ``OUT/metrics.json`` (PSNR, SSIM, LPIPS-VGG per image and
the mean) and prints the table. ``--images=DIR_OR_GLOB`` runs the same on the user's own faces.

Everything is the library's public API: ``checkpoints.load_generator``, ``discovery.load_subspaces``,
``inversion.invert`` (vmapped over the batch), ``metrics``. ``compare_methods`` is shared with
``pmsfc_jax.reproduce``.
"""

from __future__ import annotations

import json
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from pmsfc_jax import checkpoints
from pmsfc_jax import discovery
from pmsfc_jax import imageio
from pmsfc_jax import inversion
from pmsfc_jax import losses
from pmsfc_jax import metrics
from pmsfc_jax import pipeline

METHODS = ('mganprior', 'pmsfc')
# Face box of skimage's astronaut (512x512): rows, cols. Framed like the centre-cropped CelebA faces.
ASTRONAUT_FACE_BOX = (30, 200, 155, 325)


def astronaut_face(size: int) -> np.ndarray:
  """The public-domain astronaut portrait shipped with scikit-image, face crop, (size, size, 3) in [-1,1]."""
  from skimage import data as skdata  # pylint: disable=g-import-not-at-top
  top, bottom, left, right = ASTRONAUT_FACE_BOX
  crop = np.ascontiguousarray(skdata.astronaut()[top:bottom, left:right])
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return imageio.to_float(np.asarray(imageio.resize(Image.fromarray(crop), size)))


def method_config(base: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
  """``base`` (an invert config) with ``method`` and that method's code count from ``base``."""
  c = ml_collections.ConfigDict(base.to_dict())
  c.method = method
  c.num_codes = base.num_codes_mganprior if method == 'mganprior' else base.num_codes_pmsfc
  return c


def compare_methods(gen, masks: np.ndarray, percep: Optional[losses.Perceptual], targets: np.ndarray,
                    config: ml_collections.ConfigDict, keys: np.ndarray, aux=None) -> dict[str, Any]:
  """Inverts ``targets`` with every method in ``config.methods`` at equal iterations.

  Returns ``{method: InversionResult (host numpy)}`` plus ``seconds``. Same per-image keys for both.
  """
  out = {'seconds': {}}
  for method in config.methods:
    cfg = method_config(config, method)
    t0 = time.time()
    res = inversion.invert(gen, percep, targets, None if method == 'mganprior' else masks, cfg,
                           jnp.asarray(keys), aux)
    res = jax.tree.map(np.asarray, res)
    out['seconds'][method] = time.time() - t0
    out[method] = res
    logging.info('%s: %d images x %d steps in %.1f s', method, len(targets), cfg.iterations,
                 out['seconds'][method])
  return out


def image_metrics(reference: np.ndarray, candidate: np.ndarray, lpips_net=None) -> dict[str, np.ndarray]:
  """Per-image PSNR / SSIM (and LPIPS-VGG when ``lpips_net`` is given) of [-1,1] NHWC batches."""
  a01, b01 = (np.asarray(reference) + 1) / 2, (np.clip(np.asarray(candidate), -1, 1) + 1) / 2
  m = {'psnr': np.asarray(metrics.psnr(a01, b01)), 'ssim': np.asarray(metrics.ssim(a01, b01))}
  if lpips_net is not None:
    m['lpips'] = np.asarray(metrics.lpips(a01, b01, net=lpips_net))
  return m


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
  head = '| ' + ' | '.join(columns) + ' |\n|' + '---|' * len(columns) + '\n'
  def fmt(v):
    return f'{v:.4f}' if isinstance(v, float) else str(v)
  return head + ''.join('| ' + ' | '.join(fmt(r.get(c, '')) for c in columns) + ' |\n' for r in rows)


def demo_targets(gen, config) -> tuple[list[str], np.ndarray]:
  """Names and (B, R, R, 3) targets: the user's images, or astronaut + generated faces."""
  res = gen.config.resolution
  if config.images:
    items = pipeline.list_inputs(config.images, exclude=config.output_dir)[:config.max_images]
    names, images = [], []
    for it in items:
      try:
        images.append(imageio.load_image(it.path, res))
        names.append(it.stem)
      except imageio.ImageDecodeError as e:
        logging.error('skipping %s', e)
    if not images:
      raise ValueError(f'--images={config.images!r}: no readable image')
    return names, np.stack(images)
  names = ['astronaut']
  images = [astronaut_face(res)]
  seeds = list(config.generated_seeds)
  if seeds:
    z = np.stack([np.asarray(jax.random.normal(jax.random.key(s), (gen.config.z_dim,))) for s in seeds])
    gen_images = np.clip(np.asarray(jax.jit(lambda g, z: g(z))(gen, jnp.asarray(z))), -1, 1)
    names += [f'generated_seed{s}' for s in seeds]
    images += list(gen_images)
  return names, np.stack(images).astype(np.float32)


def run_demo(config: ml_collections.ConfigDict) -> dict:
  """Runs the demo (see the module docstring); returns the metrics dict also written to metrics.json."""
  out = epath.Path(config.output_dir)
  out.mkdir(parents=True, exist_ok=True)
  gen = checkpoints.load_generator(config.generator)
  subspaces = discovery.load_subspaces(config.subspaces)
  if subspaces.layer != config.layer:
    raise ValueError(f'--subspaces={config.subspaces!r} were discovered at layer {subspaces.layer}, '
                     f'but the inversion config uses layer {config.layer}')
  percep = (losses.load_perceptual(inversion.perceptual_config(config))
            if config.perceptual_weight else None)
  names, targets = demo_targets(gen, config)
  keys = pipeline.image_keys(config.seed, names)
  logging.info('demo: %d images at %dx%d, %d iterations per method', len(names),
               gen.config.resolution, gen.config.resolution, config.iterations)
  runs = compare_methods(gen, subspaces.masks, percep, targets, config, keys)
  lpips_net = metrics.load_lpips('vgg') if config.lpips else None
  rows, per_method = [], {}
  for method in config.methods:
    per_method[method] = image_metrics(targets, runs[method].delivered, lpips_net)
  for i, name in enumerate(names):
    row = {'image': name}
    for method in config.methods:
      for k, v in per_method[method].items():
        row[f'{method} {k}'] = float(v[i])
    rows.append(row)
  mean = {'image': '**mean**'}
  for method in config.methods:
    for k, v in per_method[method].items():
      mean[f'{method} {k}'] = float(np.mean(v))
  rows.append(mean)
  columns = ['image'] + [f'{m} {k}' for m in config.methods for k in per_method[config.methods[0]]]
  table = markdown_table(rows, columns)
  # Grid: target | mGANprior | PmSFC, one row per image, upscaled for viewing.
  panels = [targets] + [np.clip(runs[m].delivered, -1, 1) for m in config.methods]
  grid = np.stack(panels, axis=1).reshape(-1, *targets.shape[1:])
  grid = imageio.make_grid(grid, ncols=len(panels))
  scale = max(1, 128 // gen.config.resolution)
  grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
  imageio.save_image(out / 'demo_grid.png', grid)
  summary = {'images': names, 'iterations': int(config.iterations), 'seconds': runs['seconds'],
             'rows': rows, 'config': json.loads(config.to_json())}
  imageio.atomic_write_bytes(out / 'metrics.json', json.dumps(summary, indent=1).encode())
  header = (f'Demo: {len(names)} images, {config.iterations} iterations per method '
            f'(columns: target | {" | ".join(config.methods)} in demo_grid.png)\n\n')
  imageio.atomic_write_bytes(out / 'metrics.md', (header + table).encode())
  print(header + table)
  print(f'wrote {out / "demo_grid.png"}, {out / "metrics.md"}, {out / "metrics.json"}')
  return summary
