"""The main job on the embedded default: mGANprior vs PmSFC on the shipped demo model, no user data needed.

``python -m launch.demo`` inverts

* a public-domain photo that ships inside scikit-image (``skimage.data.astronaut()``: NASA portrait of
  Eileen Collins, cropped to the face the way the aligned CelebA training faces are framed), and
* faces the demo generator itself produces from fixed seeds (in-domain targets),

with both methods at equal iterations, and writes ``OUT/demo_grid.png`` (one row per image:
target | mGANprior | PmSFC, titled, each result's PSNR under it), ``OUT/metrics.md`` / ``OUT/metrics.json`` (PSNR, SSIM, LPIPS-VGG and
LPIPS-AlexNet per image and the mean) and prints the table. ``--images=DIR_OR_GLOB`` runs the same on the
user's own faces.

Both methods run at ONE shared fast setting (Adam lr 0.03, ``presets.demo``), which is not mGANprior's
own (SGD lr 1, 1500-3000 iterations) nor the paper's (Adam lr 1e-4, 7000): the output says so. The fair
comparison, with each method at its own settings too, is ``launch.reproduce`` (``reproduce.py``).

Everything is the library's public API: ``io.checkpoints.load_generator``, ``io.subspaces.load_subspaces``,
``core.inversion.invert`` (vmapped over the batch, with progress lines), ``evaluation.metrics``;
``compare.py`` is shared with ``reproduce.py``. The config is ``config.DemoConfig`` (``presets.demo``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath
from PIL import Image
from skimage import data as skdata

from pmsfc_jax.core import config
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import files
from pmsfc_jax.io import images as images_lib
from pmsfc_jax.io import listing
from pmsfc_jax.io import pretrained
from pmsfc_jax.io import subspaces as subspaces_lib
from pmsfc_jax.io import tables
from pmsfc_jax.jobs import compare
from pmsfc_jax.jobs import plots

# Face box of skimage's astronaut (512x512): rows, cols. Framed like the centre-cropped CelebA faces.
ASTRONAUT_FACE_BOX = (30, 200, 155, 325)
METHOD_TITLES = {'mganprior': 'mGANprior', 'pmsfc': 'PmSFC'}


def astronaut_face(size: int) -> np.ndarray:
  """The public-domain astronaut portrait shipped with scikit-image, face crop, (size, size, 3) in [-1,1]."""
  top, bottom, left, right = ASTRONAUT_FACE_BOX
  crop = np.ascontiguousarray(skdata.astronaut()[top:bottom, left:right])
  return images_lib.to_float(np.asarray(images_lib.resize(Image.fromarray(crop), size)))


def demo_targets(gen, cfg: config.DemoConfig) -> tuple[list[str], np.ndarray]:
  """Names and (B, R, R, 3) targets: the user's images, or astronaut + generated faces."""
  res = gen.config.resolution
  if cfg.job.images:
    items = listing.list_inputs(cfg.job.images, exclude=cfg.job.output_dir)[: cfg.demo.max_images]
    names, images = [], []
    for it in items:
      try:
        images.append(images_lib.load_image(it.path, res))
        names.append(it.stem)
      except images_lib.ImageDecodeError as e:
        logging.error('skipping %s', e)
    if not images:
      raise ValueError(f'--images={cfg.job.images!r}: no readable image')
    return names, np.stack(images)
  names = ['astronaut']
  images = [astronaut_face(res)]
  seeds = list(cfg.demo.generated_seeds)
  if seeds:
    z = np.stack([np.asarray(jax.random.normal(jax.random.key(s), (gen.config.z_dim,))) for s in seeds])
    gen_images = np.clip(np.asarray(jax.jit(lambda g, z: g(z))(gen, jnp.asarray(z))), -1, 1)
    names += [f'generated_seed{s}' for s in seeds]
    images += list(gen_images)
  return names, np.stack(images).astype(np.float32)


def load_models(cfg: config.InvertConfig, subspaces: bool = True):
  """(generator, subspaces or None, V or None) of a demo / reproduce config, each loaded once."""
  gen = checkpoints.load_generator(cfg.model.generator)
  sub = None
  if subspaces:
    sub = subspaces_lib.load_subspaces(cfg.model.subspaces, generator=gen, layer=cfg.model.layer)
  percep = pretrained.load_perceptual(cfg.loss.perceptual) if cfg.loss.perceptual_weight else None
  return gen, sub, percep


def run(cfg: Any) -> dict:
  """Runs the demo (see the module docstring); returns the metrics dict also written to metrics.json."""
  cfg = config.parse(config.DemoConfig, cfg)
  out = epath.Path(cfg.job.output_dir)
  out.mkdir(parents=True, exist_ok=True)
  gen, sub, percep = load_models(cfg)
  names, targets = demo_targets(gen, cfg)
  keys = listing.image_keys(cfg.seed, names)
  logging.info(
    'demo: %d images at %dx%d, %d iterations per method',
    len(names),
    gen.config.resolution,
    gen.config.resolution,
    cfg.optim.iterations,
  )
  runs = compare.compare_methods(gen, sub.masks, percep, targets, cfg, keys)
  names_m = compare.IMAGE_METRICS if cfg.job.lpips else ('psnr', 'ssim')
  methods = cfg.compare.methods
  per_method = {m: compare.image_metrics(targets, runs[m].delivered, names_m) for m in methods}
  rows = []
  for i, name in enumerate(names):
    rows.append(
      {'image': name, **{f'{m} {k}': float(v[i]) for m in methods for k, v in per_method[m].items()}}
    )
  rows.append(
    {
      'image': '**mean**',
      **{f'{m} {k}': float(np.mean(v)) for m in methods for k, v in per_method[m].items()},
    }
  )
  columns = ['image'] + [f'{m} {k}' for m in methods for k in per_method[methods[0]]]
  table = tables.markdown(columns, [[r.get(c, '') for c in columns] for r in rows]) + '\n'
  # Grid: target | mGANprior | PmSFC, one row per image, titled, each result's PSNR under it.
  panels = [targets] + [np.clip(runs[m].delivered, -1, 1) for m in methods]
  labels = [[]] + [[f'PSNR {v:.2f} dB' for v in per_method[m]['psnr']] for m in methods]
  titles = ['target'] + [METHOD_TITLES.get(m, m) for m in methods]
  images_lib.save_image(out / 'demo_grid.png', plots.titled_grid(panels, titles, labels))
  summary = {
    'images': names,
    'iterations': cfg.optim.iterations,
    'seconds': runs['seconds'],
    'rows': rows,
    'config': config.to_dict(cfg),
  }
  files.write_json(out / 'metrics.json', summary)
  header = (
    f'Demo: {len(names)} images, {cfg.optim.iterations} iterations per method '
    f'(columns: target | {" | ".join(methods)} in demo_grid.png). Both methods at the same shared '
    f"setting ({cfg.optim.optimizer} lr {cfg.optim.lr}), not at their own: mGANprior's is SGD lr 1 with "
    f"1500-3000 iterations, the paper's Adam lr 1e-4 with 7000; launch.reproduce compares both.\n\n"
  )
  files.atomic_write_bytes(out / 'metrics.md', (header + table).encode())
  print(header + table)
  print(f'wrote {out / "demo_grid.png"}, {out / "metrics.md"}, {out / "metrics.json"}')
  return summary
