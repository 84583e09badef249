r"""Generates images from a converted PGGAN: the sanity check after ``launch.convert``.

  python -m launch.generate --generator=ckpt/pggan_celebahq --latents=z.npy --output_dir=out
  python -m launch.generate --generator=demo --num_samples=16 --seed=0 --output_dir=out

Writes ``OUT/images.npy`` (float32 N x H x W x 3, the raw generator output, about [-1, 1]),
``OUT/latents.npy`` (the N x z_dim latents used), one ``OUT/sample_{i:05d}.png`` per sample
((x + 1) * 127.5, rounded, clipped) and ``OUT/grid.png`` (the first --grid_max samples).
The generator is jitted once: the last batch is padded to --batch_size.
"""

from __future__ import annotations

import math
import time

import jax
import numpy as np
from absl import app, flags, logging
from etils import epath

from pmsfc_jax import checkpoints, imageio
from pmsfc_jax.models import pggan

_GENERATOR = flags.DEFINE_string('generator', None, 'Converted generator directory or shipped model name. '
                                 'Required.')
_LATENTS = flags.DEFINE_string('latents', None, '.npy file of latents, shape (N, z_dim) (or (z_dim,)).')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', None, 'Without --latents: number of N(0, I) latents '
                                    '(default 16).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the sampled latents.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 8, 'Images per generator call.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Output directory. Required.')
_GRID_MAX = flags.DEFINE_integer('grid_max', 64, 'At most this many samples in grid.png.')
_PNGS = flags.DEFINE_bool('pngs', True, 'Write one PNG per sample.')


def load_latents(path: str, z_dim: int) -> np.ndarray:
  """Reads an .npy of shape (N, z_dim) or (z_dim,); fails naming the file on anything else."""
  z = imageio.load_npy(path, '--latents')
  if z.ndim == 1:
    z = z[None]
  if z.ndim != 2 or z.shape[1] != z_dim or z.shape[0] == 0:
    raise ValueError(f'--latents {path}: expected shape (N, {z_dim}) for this generator, got {z.shape}')
  if not np.issubdtype(z.dtype, np.floating) or not np.all(np.isfinite(z)):
    raise ValueError(f'--latents {path}: expected finite floating-point values (dtype {z.dtype})')
  return z.astype(np.float32)


def sample_latents(num: int, z_dim: int, seed: int) -> np.ndarray:
  if num <= 0:
    raise ValueError(f'--num_samples must be positive, got {num}')
  return np.asarray(jax.random.normal(jax.random.key(seed), (num, z_dim), np.float32))


def generate_batched(gen: pggan.Generator, z: np.ndarray, batch_size: int, out: np.ndarray | None = None,
                     progress: bool = False) -> np.ndarray:
  """G(z) over fixed-size batches (one compilation: the last batch is zero-padded, padding discarded)."""
  if batch_size <= 0:
    raise ValueError(f'--batch_size must be positive, got {batch_size}')
  n = z.shape[0]
  cfg = gen.config
  fn = jax.jit(lambda params, zb: pggan.generate(cfg, params, zb))
  params = jax.device_put(gen.params)
  if out is None:
    out = np.empty((n, cfg.resolution, cfg.resolution, cfg.num_channels), np.float32)
  start = time.time()
  for lo in range(0, n, batch_size):
    zb = z[lo:lo + batch_size]
    real = zb.shape[0]
    if real < batch_size:
      zb = np.concatenate([zb, np.zeros((batch_size - real, z.shape[1]), z.dtype)])
    out[lo:lo + real] = np.asarray(fn(params, zb))[:real]
    if progress:
      done = lo + real
      rate = done / max(time.time() - start, 1e-9)
      logging.info('generated %d/%d images (%.2f img/s, ETA %.0fs)', done, n, rate, (n - done) / rate)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for flag in (_GENERATOR, _OUTPUT_DIR):
    if not flag.value:
      raise app.UsageError(f'--{flag.name} is required')
  if _LATENTS.value and _NUM_SAMPLES.value is not None:
    raise app.UsageError('give either --latents or --num_samples, not both')
  gen = checkpoints.load_generator(_GENERATOR.value)
  cfg = gen.config
  if _LATENTS.value:
    z = load_latents(_LATENTS.value, cfg.z_dim)
  else:
    z = sample_latents(_NUM_SAMPLES.value or 16, cfg.z_dim, _SEED.value)
  out_dir = epath.Path(_OUTPUT_DIR.value)
  if jax.process_index() != 0:
    return
  out_dir.mkdir(parents=True, exist_ok=True)
  images = generate_batched(gen, z, _BATCH_SIZE.value, progress=True)
  _save_npy(out_dir / 'images.npy', images)
  _save_npy(out_dir / 'latents.npy', z)
  if _PNGS.value:
    for i, img in enumerate(images):
      imageio.save_image(out_dir / f'sample_{i:05d}.png', img)
  shown = images[:_GRID_MAX.value]
  imageio.save_image(out_dir / 'grid.png', imageio.make_grid(shown, ncols=math.ceil(math.sqrt(len(shown)))))
  print(f'wrote {len(images)} images of {cfg.resolution}x{cfg.resolution} to {out_dir}')


def _save_npy(path: epath.Path, array: np.ndarray):
  import io
  buf = io.BytesIO()
  np.save(buf, array, allow_pickle=False)
  imageio.atomic_write_bytes(path, buf.getvalue())


if __name__ == '__main__':
  app.run(main)
