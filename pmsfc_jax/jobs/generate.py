"""Images from a converted PGGAN (``launch.generate``): the sanity check after ``launch.convert``.

Writes ``OUT/images.npy`` (float32 N x H x W x 3, the raw generator output, about [-1, 1]),
``OUT/latents.npy`` (the N x z_dim latents used), one ``OUT/sample_{i:05d}.png`` per sample
((x + 1) * 127.5, rounded, clipped) and ``OUT/grid.png`` (the first ``grid_max`` samples). The generator
is jitted once: the last batch is padded to ``batch_size``.
"""

from __future__ import annotations

import math
import os
from typing import Optional

import jax
import numpy as np
from etils import epath

from pmsfc_jax.core import config
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import files
from pmsfc_jax.io import images
from pmsfc_jax.io import progress
from pmsfc_jax.models import pggan


def load_latents(path: str | os.PathLike, z_dim: int) -> np.ndarray:
  """Reads an .npy of shape (N, z_dim) or (z_dim,); anything else (a missing file, an .npz archive, a
  pickle, another shape) is a ``config.ConfigError`` naming the file (one line, exit status 2)."""
  try:
    z = files.load_npy(path, '--latents')
  except (OSError, ValueError) as e:
    raise config.ConfigError(str(e)) from None
  if z.ndim == 1:
    z = z[None]
  if z.ndim != 2 or z.shape[1] != z_dim or z.shape[0] == 0:
    raise config.ConfigError(
      f'--latents {path}: expected shape (N, {z_dim}) for this generator, got {z.shape}'
    )
  if not np.issubdtype(z.dtype, np.floating) or not np.all(np.isfinite(z)):
    raise config.ConfigError(f'--latents {path}: expected finite floating-point values (dtype {z.dtype})')
  return z.astype(np.float32)


def sample_latents(num: int, z_dim: int, seed: int) -> np.ndarray:
  if num <= 0:
    raise ValueError(f'--num_samples must be positive, got {num}')
  return np.asarray(jax.random.normal(jax.random.key(seed), (num, z_dim), np.float32))


def generate_batched(
  gen: pggan.Generator,
  z: np.ndarray,
  batch_size: int,
  out: np.ndarray | None = None,
  log_every_s: Optional[float] = None,
) -> np.ndarray:
  """G(z) over fixed-size batches (one compilation: the last batch is zero-padded, padding discarded).

  ``log_every_s``: report progress at most that often (None: silent)."""
  if batch_size <= 0:
    raise ValueError(f'--batch_size must be positive, got {batch_size}')
  n = z.shape[0]
  cfg = gen.config
  fn = jax.jit(lambda params, zb: pggan.generate(cfg, params, zb))
  params = jax.device_put(gen.params)
  if out is None:
    out = np.empty((n, cfg.resolution, cfg.resolution, cfg.num_channels), np.float32)
  report = None if log_every_s is None else progress.Progress(n, 'generated', 'images', log_every_s)
  for lo in range(0, n, batch_size):
    zb = z[lo : lo + batch_size]
    real = zb.shape[0]
    if real < batch_size:
      zb = np.concatenate([zb, np.zeros((batch_size - real, z.shape[1]), z.dtype)])
    out[lo : lo + real] = np.asarray(fn(params, zb))[:real]
    if report is not None:
      report.update(real)
  if report is not None:
    report.close()
  return out


def run(
  generator: str,
  output_dir: str,
  latents: Optional[str] = None,
  num_samples: Optional[int] = None,
  seed: int = 0,
  batch_size: int = 8,
  grid_max: int = 64,
  pngs: bool = True,
  log_every_s: float = 30.0,
) -> None:
  """``launch.generate`` (see the module docstring); ``latents`` and ``num_samples`` (default 16) exclude
  each other."""
  if latents and num_samples is not None:
    raise ValueError('give either --latents or --num_samples, not both')
  gen = checkpoints.load_generator(generator)
  cfg = gen.config
  z = load_latents(latents, cfg.z_dim) if latents else sample_latents(num_samples or 16, cfg.z_dim, seed)
  if jax.process_index() != 0:
    return
  out_dir = epath.Path(output_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  imgs = generate_batched(gen, z, batch_size, log_every_s=log_every_s)
  files.save_npy(out_dir / 'images.npy', imgs)
  files.save_npy(out_dir / 'latents.npy', z)
  if pngs:
    for i, img in enumerate(imgs):
      images.save_image(out_dir / f'sample_{i:05d}.png', img)
  shown = imgs[:grid_max]
  images.save_image(out_dir / 'grid.png', images.make_grid(shown, ncols=math.ceil(math.sqrt(len(shown)))))
  print(f'wrote {len(imgs)} images of {cfg.resolution}x{cfg.resolution} to {out_dir}')
