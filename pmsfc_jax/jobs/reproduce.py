"""The fair small-scale reproduction of the paper's tables on held-out aligned CelebA faces (demo model).

Rows (``presets.reproduce_row``), every one on the same faces with the same per-image keys:

1. mGANprior at its own settings (SGD lr 1, its per-task iterations, N = 30 at layer 3),
2. PmSFC at the paper's setting (Adam lr 1e-4, Eq. 9 as written, R = 6, K = 5) at row 1's iterations,
3. mGANprior and 4. PmSFC at the shared fast setting (the config's ``optim`` / ``loss``),
5. PmSFC fast with Eq. 9 as written (the effect of the library's default deviation).

Rows 1-2 run on the first ``reproduce.slow_images`` faces, rows 3-5 on ``reproduce.num_images``. Tasks:
reconstruction (Table 1), colorization (Table 2: input = the grayscale face; AuC of the delivered image),
super-resolution (Table 3: input = the face downsampled ``task.factor`` times), inpainting (input = the
face with the holes of ``task.mask`` zeroed, default the generated centre square). Every task reports
PSNR, SSIM, LPIPS-VGG and LPIPS-AlexNet (a backbone the VGG16 loss never sees) of the delivered image
against the face; per task the mean, standard deviation and number of faces of each row, and for the
pairs 1 vs 2, 3 vs 4 and 4 vs 5 on how many faces each row wins per metric.

Resumable: each (task, row) is written to ``OUT/rows/<task>.<row>.json`` (+ ``.npy`` of the delivered
images) when it finishes and reused by a later run with the same settings and faces; a row whose
settings equal an earlier row's (row 5 on reconstruction is row 4) reuses that row's result. Writes
``OUT/reproduction.md`` (the README's table), ``OUT/reproduction.json`` (per-image values) and
``OUT/<task>_grid.png`` (first faces: input | target | one column per row, titled, each result's PSNR
against the face under it).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import numpy as np
from absl import logging
from etils import epath

from pmsfc_jax.core import config
from pmsfc_jax.core import degradations
from pmsfc_jax.core import presets
from pmsfc_jax.evaluation import metrics
from pmsfc_jax.io import files
from pmsfc_jax.io import images
from pmsfc_jax.io import listing
from pmsfc_jax.io import masks
from pmsfc_jax.io import tables
from pmsfc_jax.jobs import compare
from pmsfc_jax.jobs import demo
from pmsfc_jax.jobs import plots
from pmsfc_jax.jobs.invert import fingerprint

PAIRS = (
  ('mganprior', 'pmsfc_paper'),
  ('mganprior_fast', 'pmsfc_fast'),
  ('pmsfc_fast', 'pmsfc_fast_eq9'),
  ('mganprior', 'pmsfc_paper_full'),
)
LABELS = {'psnr': 'PSNR (dB) ↑', 'ssim': 'SSIM ↑', 'lpips_vgg': 'LPIPS-VGG ↓', 'lpips_alex': 'LPIPS-Alex ↓'}
LABELS['auc'] = 'AuC (%) ↑'
GRID_TITLES = {  # the grids' column titles (the table's row numbers before them)
  'mganprior': 'mGANprior',
  'pmsfc_paper': 'PmSFC paper',
  'mganprior_fast': 'mGANprior fast',
  'pmsfc_fast': 'PmSFC fast',
  'pmsfc_fast_eq9': 'PmSFC Eq. 9',
  'pmsfc_paper_full': 'PmSFC 7000',
}
TITLES = {
  'reconstruct': 'reconstruction',
  'colorize': 'colorization',
  'super_resolve': '{f}x super-resolution',
  'inpaint': 'inpainting',
}
NO_IMAGES = (
  'pass --images=DIR_OR_GLOB: aligned CelebA faces, e.g. img_align_celeba/009001.jpg-009100.jpg of the '
  'CelebA release (non-commercial research terms), unseen by the demo model; --num_images=N takes the first N'
)


class MissingInputError(ValueError):
  """The reproduction was started without faces (``NO_IMAGES`` says what to pass)."""


def task_metrics(task: str) -> tuple[str, ...]:
  return (('auc',) if task == 'colorize' else ()) + compare.IMAGE_METRICS


def load_faces(cfg: config.ReproduceConfig, size: int) -> tuple[list[str], np.ndarray]:
  """(stems, faces (N, size, size, 3) in [-1, 1]) of the first ``reproduce.num_images`` of ``--images``."""
  if not cfg.job.images:
    raise MissingInputError(NO_IMAGES)
  n = cfg.reproduce.num_images
  items = listing.list_inputs(cfg.job.images)[:n]
  if len(items) < n:
    raise ValueError(f'--images={cfg.job.images!r} lists {len(items)} images, fewer than --num_images={n}')
  return [it.stem for it in items], np.stack([images.load_image(it.path, size) for it in items])


def known_mask(task: config.Task, size: int) -> np.ndarray:
  """(size, size, 1) known-pixel mask: ``task.mask`` (white = hole), else the centre-square hole."""
  if not task.mask:
    return degradations.center_hole_mask(size)
  k = masks.load_inpainting_mask(task.mask, size, threshold=task.mask_threshold)
  return np.asarray(k, np.float32).reshape(size, size, 1)


def task_inputs(task: config.Task, faces: np.ndarray, size: int):
  """(inputs the methods see, aux) for ``task`` from the ground-truth faces."""
  known = None
  if task.name == 'inpaint':
    known = np.broadcast_to(known_mask(task, size)[None], (len(faces), size, size, 1))
  return np.asarray(degradations.prepare_target(faces, task, known)), known


def identity(rcfg: config.InvertConfig, generator_sha256: str, resolution: int, masks) -> dict:
  """What a row's result depends on: its result settings and the *contents* of what it reads (the
  generator's weights, the subspace masks for PmSFC, the known-pixel mask for inpainting), as the batch
  job's fingerprint (``fingerprint.payload``). Rows written before issue 19 recorded paths instead
  (``{'generator': 'demo', ...}``): a path says nothing of the weights it held when the row ran, so
  those rows are recomputed once. ``generator_sha256``: ``fingerprint.generator_sha256(gen)``."""
  used = {'generator_sha256': generator_sha256}
  if rcfg.method.name == 'pmsfc':
    used['subspace_masks_sha256'] = fingerprint.content_sha256([np.asarray(masks)])
  if rcfg.task.name == 'inpaint':
    known = known_mask(rcfg.task, resolution)
    used['inpainting_mask_sha256'] = fingerprint.content_sha256([known])
  return json.loads(json.dumps({'settings': config.result_settings(rcfg), 'files': used}))


def run_row(models, rcfg: config.InvertConfig, inputs, known, faces, keys, batch: int) -> dict:
  """Inverts ``inputs`` under ``rcfg`` in batches; per-image metrics, delivered images, seconds."""
  gen, sub, percep = models
  delivered, seconds = [], 0.0
  for lo in range(0, len(inputs), batch):
    sl = slice(lo, lo + batch)
    aux = None if known is None else known[sl]
    res, s = compare.invert_one(gen, sub.masks, percep, inputs[sl], rcfg, keys[sl], aux)
    delivered.append(res.delivered)
    seconds += s
  d = np.concatenate(delivered)
  vals = compare.image_metrics(faces, d, task_metrics(rcfg.task.name))
  return {'metrics': {k: v.tolist() for k, v in vals.items()}, 'seconds': seconds, 'delivered': d}


def run(cfg: Any) -> dict:
  """Runs every task of ``cfg.reproduce.tasks`` and row of ``cfg.reproduce.rows`` (module docstring)."""
  cfg = config.parse(config.ReproduceConfig, cfg)
  if not cfg.job.images:
    raise MissingInputError(NO_IMAGES)
  out = epath.Path(cfg.job.output_dir)
  (out / 'rows').mkdir(parents=True, exist_ok=True)
  models = demo.load_models(cfg)
  size = models[0].config.resolution
  names, faces = load_faces(cfg, size)
  keys = np.asarray(listing.image_keys(cfg.seed, names))
  slow = min(cfg.reproduce.slow_images, len(names))
  gen_sha = fingerprint.generator_sha256(models[0])
  t_start = time.time()
  results = {}
  for task in cfg.reproduce.tasks:
    results[task] = {}
    for row in cfg.reproduce.rows:
      rcfg = presets.reproduce_row(cfg, row, task)
      n = slow if row in presets.SLOW_ROWS else len(names)
      inputs, known = task_inputs(rcfg.task, faces[:n], size)
      ident = {**identity(rcfg, gen_sha, size, models[1].masks), 'images': names[:n]}
      path = out / 'rows' / f'{task}.{row}'  # + .json / .npy
      same = [r for r, v in results[task].items() if comparable(v['identity']) == comparable(ident)]
      if same:  # Identical settings and faces: the same result (e.g. row 5 on reconstruction is row 4).
        results[task][row] = results[task][same[0]]
        continue
      done = _load_row(path, ident)
      if done is None:
        done = run_row(models, rcfg, inputs, known, faces[:n], keys[:n], cfg.job.batch_size)
        done.update(identity=ident, iterations=rcfg.optim.iterations, file=f'{task}.{row}')
        files.save_npy(f'{path}.npy', done.pop('delivered').astype(np.float32))
        files.write_json(f'{path}.json', done)
        logging.info('reproduce: %s / %s done (%d faces, %.0f s)', task, row, n, done['seconds'])
      results[task][row] = done
    _write_grid(out, cfg, task, faces, size, results[task])
  unique = {id(v): v for by_row in results.values() for v in by_row.values()}
  blob = {
    'results': results,
    'compute_seconds': sum(v['seconds'] for v in unique.values()),
    'images': names,
    'slow_images': slow,
    'wall_seconds_this_run': time.time() - t_start,
    'config': config.to_dict(cfg),
  }
  table = format_table(blob, cfg)
  files.write_json(out / 'reproduction.json', blob)
  files.atomic_write_bytes(out / 'reproduction.md', table.encode())
  print(table)
  return blob


def comparable(ident: Any) -> Any:
  """``ident`` with the settings added later at their old values left out (``fingerprint``): rows
  computed before a setting existed still count as computed with its default."""
  if not isinstance(ident, dict) or not isinstance(ident.get('settings'), dict):
    return ident
  return {**ident, 'settings': fingerprint.without_later_settings(ident['settings'])}


def _load_row(path: epath.Path, ident: dict) -> dict | None:
  """A finished row's result if it was computed with ``ident``; else None (it is recomputed)."""
  js = epath.Path(f'{path}.json')
  if not (js.exists() and epath.Path(f'{path}.npy').exists()):
    return None
  done = json.loads(js.read_text())
  if comparable(done.get('identity')) != comparable(ident):
    logging.info('reproduce: %s holds another configuration; recomputing it', js)
    return None
  return done


def _write_grid(out: epath.Path, cfg: config.ReproduceConfig, task: str, faces, size: int, by_row: dict):
  """``OUT/<task>_grid.png``: input | target | one column per row (in order), for the first faces."""
  rows = [files.load_npy(out / 'rows' / f'{r["file"]}.npy', 'delivered images') for r in by_row.values()]
  n = min([cfg.reproduce.grid_images, len(faces)] + [len(r) for r in rows])
  inputs, _ = task_inputs(dataclasses.replace(cfg.task, name=task), faces[:n], size)
  if task == 'super_resolve':
    inputs = np.repeat(np.repeat(inputs, size // inputs.shape[1], 1), size // inputs.shape[2], 2)
  panels = [inputs, faces[:n]] + [np.clip(r[:n], -1, 1) for r in rows]
  titles = ['input', 'target'] + [f'{presets.ROW_NUMBERS[r]} {GRID_TITLES[r]}' for r in by_row]
  labels = [[], []] + [[f'PSNR {v:.2f} dB' for v in r['metrics']['psnr'][:n]] for r in by_row.values()]
  images.save_image(
    out / f'{task}_grid.png', plots.titled_grid(panels, titles, labels, cell=96, font_size=12)
  )


def _mean_sd(values) -> str:
  """``mean ± sample standard deviation`` (2 decimals from 10 up, else 3)."""
  v = np.asarray(values, np.float64)
  digits = 2 if abs(v.mean()) >= 10 else 3
  return f'{v.mean():.{digits}f} ± {(v.std(ddof=1) if len(v) > 1 else 0.0):.{digits}f}'


def wins(a: dict, b: dict, metric: str) -> tuple[int, int, int]:
  """(faces on which row a is better, on which b is better, ties) among the faces both rows ran."""
  ia, ib = a['identity']['images'], b['identity']['images']
  common = [name for name in ia if name in set(ib)]
  va = np.asarray([a['metrics'][metric][ia.index(n)] for n in common])
  vb = np.asarray([b['metrics'][metric][ib.index(n)] for n in common])
  better = (va > vb) if metrics.HIGHER_IS_BETTER[metric] else (va < vb)
  ties = int(np.sum(va == vb))
  return int(np.sum(better)), len(common) - int(np.sum(better)) - ties, ties


def format_table(blob: dict, cfg: config.ReproduceConfig) -> str:
  """The markdown tables of the README (one per task) and the wins of each paired comparison."""
  names, rows = blob['images'], list(cfg.reproduce.rows)
  codes = dict(n=cfg.compare.num_codes_mganprior, k=cfg.compare.num_codes_pmsfc, lr=cfg.optim.lr)
  lines = [
    f'Faces {names[0]} .. {names[-1]}: rows 1-2 on the first {blob["slow_images"]}, rows 3-5 on all '
    f'{len(names)}; the same per-image keys (seed {cfg.seed}) for every row. Shared fast setting: '
    f'{cfg.optim.iterations} iterations, {cfg.optim.optimizer} lr {cfg.optim.lr}. Layer {cfg.model.layer}, '
    f'PmSFC R = the subspaces of `{cfg.model.subspaces}`. Mean ± standard deviation over the faces; '
    f'inversion time {blob["compute_seconds"] / 60:.0f} min in all.',
  ]
  for task, by_row in blob['results'].items():
    present = [r for r in rows if r in by_row]
    ms = task_metrics(task)
    body = []
    for r in present:
      res = by_row[r]
      title = presets.ROW_TITLES[r].format(**codes)
      cells = [_mean_sd(res['metrics'][m]) for m in ms]
      body.append([presets.ROW_NUMBERS[r], title, len(res['identity']['images']), res['iterations'], *cells])
    header = ['row', 'setting', 'faces', 'iterations'] + [LABELS[m] for m in ms]
    lines += ['', f'**{TITLES[task].format(f=cfg.task.factor)}**', '', tables.markdown(header, body)]
    pairs = [(a, b) for a, b in PAIRS if a in by_row and b in by_row]
    if pairs:
      wbody = []
      for a, b in pairs:
        counts = [wins(by_row[a], by_row[b], m) for m in ms]
        cells = [f'{x} : {y}' + (f' ({t} tied)' if t else '') for x, y, t in counts]
        n = sum(counts[0])
        wbody.append([f'{presets.ROW_NUMBERS[a]} vs {presets.ROW_NUMBERS[b]}', n, *cells])
      lines += ['', tables.markdown(['faces won', 'faces'] + [LABELS[m] for m in ms], wbody)]
  return '\n'.join(lines) + '\n'
