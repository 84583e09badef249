r"""Early stop with continuous refill against fixed iterations: images per hour and quality (issue 19).

  python -m bench.bench_early_stop                                  # 50 held-out faces, both runs
  python -m bench.bench_early_stop --task=super_resolve --stop_window=50 --stop_tolerance=0.01
  python -m bench.bench_early_stop --num_images=4 --iterations=20 --stop_window=3   # a smoke run

Runs the batch job (``jobs/invert``, in this process, one after the other on the same machine) twice on
the same held-out aligned CelebA faces (``celeba_small/009101.jpg`` onwards by default: not the faces the
criterion was chosen on, ``bench_convergence.py`` uses 009001-009010), with the reproduction's model and
loss (demo generator, VGG16 relu3_3 at 32x32; ``--task=super_resolve``: the 8x8 inputs of its 4x area
downsampling, written as PNGs the job reads) and the PmSFC setting of ``--lr`` / ``--iterations``:

* fixed: every image runs ``--iterations`` steps (batches of ``--batch_size``);
* early stop: ``job.stop_tolerance`` / ``job.stop_window`` with ``--iterations`` as the cap, the slots
  refilled as images stop (``jobs/invert/refill.py``).

Prints per run: wall time and images per hour, the image-steps the device ran (slot-steps, the compute
measure that machine noise does not move: rows x steps, empty slots of the tail included), mean ± sd PSNR,
SSIM and LPIPS-AlexNet of the written PNGs against the full-resolution faces (for super-resolution the
job's own PSNR is against its low-resolution input), per-face wins, and the distribution of the steps
early stop used. The goal of issue 19: at least 2x the images per hour at a mean PSNR
within 0.2 dB of the fixed run.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time

import numpy as np
from absl import app
from absl import flags

from pmsfc_jax.core import config
from pmsfc_jax.core import presets
from pmsfc_jax.evaluation import metrics
from pmsfc_jax.io import images
from pmsfc_jax.io import tables
from pmsfc_jax.jobs import logs
from pmsfc_jax.jobs import reproduce
from pmsfc_jax.jobs.invert import job

_SHARED = pathlib.Path(os.environ.get('PMSFC_SHARED', pathlib.Path(__file__).resolve().parents[2] / 'shared'))
_FACES = flags.DEFINE_string('faces', str(_SHARED / 'data' / 'celeba_small'), 'Aligned CelebA folder.')
_FIRST = flags.DEFINE_integer('first_image', 9101, 'First held-out face (009101.jpg).')
_NUM = flags.DEFINE_integer('num_images', 50, 'Faces.')
_OUT = flags.DEFINE_string('output_dir', 'bench_out/early_stop', 'Where both runs write (emptied first).')
_LR = flags.DEFINE_float('lr', 0.03, 'Adam learning rate (PmSFC).')
_ITERS = flags.DEFINE_integer('iterations', 1600, 'Fixed iterations, and the cap of early stop.')
_TOL = flags.DEFINE_float('stop_tolerance', 0.02, 'job.stop_tolerance of the early-stop run.')
_WINDOW = flags.DEFINE_integer('stop_window', 100, 'job.stop_window of the early-stop run.')
_BATCH = flags.DEFINE_integer('batch_size', 10, 'Images per batch (fixed) / slots (early stop).')
_TASK = flags.DEFINE_enum('task', 'reconstruct', ['reconstruct', 'super_resolve'], 'Task.')


def _config(images_list: str, out: pathlib.Path, stop: bool) -> config.InvertConfig:
  cfg = presets.reproduce_row(presets.reproduce(), 'pmsfc_fast', _TASK.value)
  return config.override(
    cfg,
    {
      'optim.lr': _LR.value,
      'optim.iterations': _ITERS.value,
      'job.images': images_list,
      'job.output_dir': str(out),
      'job.batch_size': _BATCH.value,
      'job.num_devices': 1,
      'job.checkpoint_every': 0,
      'job.log_every_s': 120.0,
      'job.stop_tolerance': _TOL.value if stop else 0.0,
      'job.stop_window': _WINDOW.value,
    },
  )


def _run(cfg: config.InvertConfig, faces: dict[str, np.ndarray]) -> dict:
  """One job; per face (``faces``: input path -> the full-resolution face) its metrics and steps."""
  t0 = time.perf_counter()
  summary = job.run(cfg)
  wall = time.perf_counter() - t0
  out = pathlib.Path(cfg.job.output_dir)
  recs = [json.loads(line) for line in (out / 'manifest.jsonl').read_text().splitlines()]
  recs = {r['name']: r for r in recs}
  names = sorted(recs)
  got = np.stack([images.load_image(str(out / f'{recs[n]["stem"]}.png')) for n in names])
  ref = np.stack([faces[recs[n]['path']] for n in names])
  m = metrics.compute(['psnr', 'ssim', 'lpips_alex'], ref, got, signed=True)
  return {
    'names': names,
    'wall': wall,
    'ok': summary['ok'],
    **{k: np.asarray(v, np.float64) for k, v in m.items()},
    'steps': np.asarray([int(recs[n]['steps']) for n in names]),
    'slot_steps': int(summary['this_process'].get('slot_steps', 0)),  # rows x steps the device ran
  }


def _inputs(root: pathlib.Path, paths: list[pathlib.Path]) -> tuple[pathlib.Path, dict[str, np.ndarray]]:
  """The listing the jobs read and ``{input path: full-resolution face}``: the faces themselves, or for
  super-resolution their low-resolution versions written as PNGs."""
  faces = np.stack([images.load_image(str(p), 32) for p in paths])
  listed = paths
  if _TASK.value == 'super_resolve':
    task = presets.reproduce_row(presets.reproduce(), 'pmsfc_fast', _TASK.value).task
    low, _ = reproduce.task_inputs(task, faces, faces.shape[1])
    (root / 'inputs').mkdir()
    listed = [(root / 'inputs' / f'{p.stem}.png').resolve() for p in paths]  # a listing's relative
    # paths are read from the listing file's folder
    for p, x in zip(listed, low):
      images.save_image(p, x)
  listing_file = root / 'faces.txt'
  listing_file.write_text('\n'.join(str(p) for p in listed) + '\n')
  return listing_file, {str(p): f for p, f in zip(listed, faces)}


def main(argv):
  del argv
  logs.quiet_libraries()
  paths = [
    pathlib.Path(_FACES.value) / f'{i:06d}.jpg' for i in range(_FIRST.value, _FIRST.value + _NUM.value)
  ]
  missing = [p for p in paths if not p.is_file()]
  if missing:
    raise app.UsageError(f'--faces={_FACES.value}: {missing[0]} is missing')
  root = pathlib.Path(_OUT.value)
  shutil.rmtree(root, ignore_errors=True)
  root.mkdir(parents=True)
  listing_file, faces = _inputs(root, paths)
  runs = {}
  for label, stop in (('fixed', False), ('early stop', True)):
    runs[label] = _run(_config(str(listing_file), root / label.replace(' ', '_'), stop), faces)
  fixed, early = runs['fixed'], runs['early stop']
  print(_report(fixed, early))


def _mean_sd(v) -> str:
  return f'{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}'


def _report(fixed: dict, early: dict) -> str:
  n = len(fixed['names'])
  rows = []
  for label, r in (('fixed', fixed), ('early stop + refill', early)):
    rows.append(
      [
        label,
        r['ok'],
        f'{r["wall"]:.0f}',
        f'{3600 * n / r["wall"]:.0f}',
        r['slot_steps'],
        _mean_sd(r['psnr']),
        _mean_sd(r['ssim']),
        _mean_sd(r['lpips_alex']),
        f'{np.mean(r["steps"]):.0f}',
      ]
    )
  header = [
    'run',
    'images ok',
    'wall s',
    'images / hour',
    'slot-steps run',
    'PSNR (dB)',
    'SSIM',
    'LPIPS-Alex',
    'mean steps',
  ]
  d = early['psnr'] - fixed['psnr']
  q = np.percentile(early['steps'], [0, 10, 25, 50, 75, 90, 100]).astype(int)
  lines = [
    f'{_TASK.value}: {n} faces, PmSFC Adam lr {_LR.value}, cap {_ITERS.value} steps, batch {_BATCH.value}; early stop: '
    f'tolerance {_TOL.value}, window {_WINDOW.value}',
    '',
    tables.markdown(header, rows),
    '',
    f'images per hour: early / fixed = {fixed["wall"] / early["wall"]:.2f}x (wall), '
    f'{fixed["slot_steps"] / max(early["slot_steps"], 1):.2f}x (slot-steps run), '
    f"{fixed['steps'].sum() / max(early['steps'].sum(), 1):.2f}x (the images' own steps: what a job of many "
    'more images than slots approaches, the tail of empty or frozen slots then negligible)',
    f'PSNR change early - fixed: mean {d.mean():+.3f} dB (sd {d.std(ddof=1):.3f}; faces better / worse / '
    f'tied: {int((d > 0).sum())} / {int((d < 0).sum())} / {int((d == 0).sum())}); LPIPS-Alex change '
    f'{np.mean(early["lpips_alex"] - fixed["lpips_alex"]):+.4f}',
    f'steps used by early stop: min {q[0]}, p10 {q[1]}, p25 {q[2]}, median {q[3]}, p75 {q[4]}, p90 {q[5]}, '
    f'max {q[6]} (cap {_ITERS.value}; {int((early["steps"] >= _ITERS.value).sum())} faces reached it)',
  ]
  return '\n'.join(lines)


if __name__ == '__main__':
  app.run(main)
