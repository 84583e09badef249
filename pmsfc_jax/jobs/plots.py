"""Pictures of subspace discovery (paper Fig. 3 and Fig. 4). matplotlib (Agg) / Pillow; never in a hot path.

* :func:`plot_losses`: L_recF and L_recD against the iteration (Fig. 3 left);
* :func:`plot_affinity`: the affinity matrix with channels reordered by subspace (Fig. 3 right);
* :func:`exchange_grid` / :func:`exchange_grids`: for subspace r, an N x N grid whose cell (i, j) is
  G2 of the features of sample i with the channels of subspace r taken from sample j (Fig. 4); the
  diagonal holds the unchanged samples;
* :func:`titled_grid`: the demo's and the reproduction's comparison grids: a title above each column
  (target, mGANprior, PmSFC, ...) and each result's PSNR under it, small faces enlarged (Pillow's
  built-in font: no font file needed).
"""

from __future__ import annotations

import io
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from pmsfc_jax.core import clustering
from pmsfc_jax.core import editing
from pmsfc_jax.io import files
from pmsfc_jax.io import images as images_lib
from pmsfc_jax.jobs import convergence
from pmsfc_jax.models import pggan


def _savefig(fig, path) -> epath.Path:
  path = epath.Path(path)
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=110, bbox_inches='tight')
  files.atomic_write_bytes(path, buf.getvalue())
  return path


def _plt():
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg', force=False)
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  return plt


def plot_losses(history: dict, path) -> epath.Path:
  """Fig. 3 (left): L_recF and L_recD (and the L1 term, total) per iteration, log scale."""
  plt = _plt()
  keys = [('rec_f', r'$L_{recF}$'), ('rec_d', r'$L_{recD}$'), ('l1', r'$\|S\|_1$'), ('total', 'total')]
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for ax, group in zip(axes, (keys[:2], keys[2:])):
    for k, label in group:
      y = np.asarray(history.get(k, []), np.float64)
      if y.size:
        ax.plot(np.arange(1, y.size + 1), y, label=label, lw=1)
    ax.set_xlabel('iteration')
    if all(np.all(np.asarray(history.get(k, [1.0])) > 0) for k, _ in group):
      ax.set_yscale('log')
    ax.legend()
    ax.grid(alpha=0.3)
  fig.suptitle('Self-expressive layer training (Eq. 5)')
  out = _savefig(fig, path)
  plt.close(fig)
  return out


def plot_affinity(affinity: np.ndarray, labels: np.ndarray, path) -> epath.Path:
  """Fig. 3 (right): affinity with channels grouped by subspace (largest first), block borders drawn."""
  plt = _plt()
  perm = clustering.reorder_permutation(labels)
  a = np.asarray(affinity)[np.ix_(perm, perm)]
  vmax = np.quantile(a, 0.99) if np.any(a > 0) else 1.0
  fig, ax = plt.subplots(figsize=(6, 6))
  ax.imshow(a, cmap='Oranges', vmin=0, vmax=max(vmax, 1e-12), interpolation='nearest')
  sizes = np.bincount(np.asarray(labels), minlength=int(np.max(labels)) + 1)
  for edge in np.cumsum(sizes)[:-1]:
    ax.axhline(edge - 0.5, color='k', lw=0.6)
    ax.axvline(edge - 0.5, color='k', lw=0.6)
  ax.set_title(f'affinity, channels ordered by subspace (sizes {sizes.tolist()})', fontsize=9)
  ax.set_xticks([])
  ax.set_yticks([])
  out = _savefig(fig, path)
  plt.close(fig)
  return out


def titled_grid(
  columns: Sequence[np.ndarray],
  titles: Sequence[str],
  labels: Sequence[Sequence[str]] = (),
  cell: int = 128,
  pad: int = 4,
  font_size: int = 14,
) -> np.ndarray:
  """Columns of images (each (N, h, w, 3) in [-1, 1]) side by side, a title above each column and a
  label under each image (``labels[c][i]``, e.g. its PSNR); cells enlarged by an integer nearest-neighbour
  factor to at least ``cell`` pixels so 32x32 faces and the text stay readable. Float (H, W, 3) in [-1, 1]."""
  font = ImageFont.load_default(size=font_size)
  n = len(columns[0])
  side = max(-(-cell // c.shape[1]) * c.shape[1] for c in columns)
  line = font_size + 6
  width = len(columns) * (side + pad) + pad
  canvas = Image.new('RGB', (width, line + n * (side + line + pad) + pad), 'white')
  draw = ImageDraw.Draw(canvas)

  def centred(text: str, x: int, y: int) -> None:
    box = draw.textbbox((0, 0), text, font=font)
    draw.text((x + (side - (box[2] - box[0])) // 2, y), text, fill='black', font=font)

  for c, (col, title) in enumerate(zip(columns, titles)):
    x = pad + c * (side + pad)
    centred(title, x, 2)
    k = side // col.shape[1]
    for i in range(n):
      y = line + i * (side + line + pad)
      up = np.repeat(np.repeat(images_lib.to_uint8(np.clip(col[i], -1, 1)), k, 0), k, 1)
      canvas.paste(Image.fromarray(up), (x, y))
      if c < len(labels) and labels[c] and labels[c][i]:
        centred(labels[c][i], x, y + side + 2)
  return images_lib.to_float(np.asarray(canvas))


def exchange_grid(gen: pggan.Generator, layer: int, mask, z, min_cell: int = 96) -> np.ndarray:
  """The N x N exchange grid (one image, float in [-1, 1]) of one subspace for latents z (N, z_dim).

  Cells smaller than ``min_cell`` pixels are enlarged by an integer nearest-neighbour factor so small
  generators stay visible.
  """
  g2 = jax.jit(lambda p, f: pggan.g2(gen.config, p, f, layer))
  feats = pggan.g1(gen.config, gen.params, jnp.asarray(z), layer)
  n = feats.shape[0]
  mixed = editing.exchange_features(
    feats[:, None], feats[None, :], jnp.asarray(mask)
  )  # (i, j): f_i, f_j on mask
  mixed = mixed.reshape((n * n,) + feats.shape[1:])
  images = np.concatenate([np.asarray(g2(gen.params, mixed[i * n : (i + 1) * n])) for i in range(n)])
  scale = max(1, -(-min_cell // images.shape[1]))
  images = np.repeat(np.repeat(images, scale, axis=1), scale, axis=2)
  return images_lib.make_grid(np.clip(images, -1, 1), ncols=n)


def exchange_grids(
  gen: pggan.Generator, layer: int, masks: np.ndarray, out_dir, num_samples: int = 4, seed: int = 0
) -> list[epath.Path]:
  """Writes ``exchange_subspace_<r>.png`` for every subspace r (Fig. 4), same latents for all."""
  z = jax.random.normal(jax.random.key(seed), (num_samples, gen.config.z_dim), jnp.float32)
  paths = []
  for r, mask in enumerate(np.asarray(masks)):
    grid = exchange_grid(gen, layer, mask, z)
    p = epath.Path(out_dir) / f'exchange_subspace_{r}.png'
    images_lib.save_image(p, grid)
    paths.append(p)
  return paths


def plot_convergence(curves: dict, path) -> epath.Path:
  """Mean PSNR against steps (log x), one panel per task, one thin line per setting (solid: Adam at a
  constant lr, dashed: SGD, dotted: a schedule, dash-dot: the random partition) and each method's best
  envelope in bold: at each step the best mean any of its settings reached within that many steps (a
  budget of s steps can stop at any earlier step) (``bench_convergence.py``).

  ``curves``: {task: {setting: (steps, mean PSNR)}}; a setting's method is its name up to ``_``."""
  plt = _plt()
  tasks = [t for t in curves if curves[t]]
  fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.8), squeeze=False)
  colours = {'pmsfc': 'tab:red', 'mganprior': 'tab:blue'}

  def style(name: str) -> str:
    return '-.' if name.endswith('_random') else ':' if 'cosine' in name else '--' if '_sgd_' in name else '-'

  for ax, task in zip(axes[0], tasks):
    for name, (steps, psnr) in sorted(curves[task].items()):
      method = name.split('_')[0]
      ax.plot(steps, psnr, style(name), color=colours.get(method, 'gray'), lw=0.9, alpha=0.55)
      ax.annotate(name.split('_', 1)[1], (steps[-1], psnr[-1]), fontsize=6, alpha=0.7)
    for method in sorted({name.split('_')[0] for name in curves[task]}):
      own = {k: v for k, v in curves[task].items() if k.split('_')[0] == method and not k.endswith('_random')}
      xs, ys = convergence.best_envelope(own)
      ax.plot(xs, ys, color=colours.get(method, 'gray'), lw=2.6, label=f'{method}: best within s steps')
    ax.set_xscale('log')
    ax.set(title=task, xlabel='steps s', ylabel='mean PSNR (dB)')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(loc='lower right')
  fig.tight_layout()
  out = _savefig(fig, path)
  plt.close(fig)
  return out
