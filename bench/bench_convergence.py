r"""Quality per step (issue 19): PSNR / SSIM / LPIPS against steps for both methods, many optimiser settings.

  python -m bench.bench_convergence                          # the sweep (resumable), then the report
  python -m bench.bench_convergence --report_only            # tables + plot from what is recorded
  python -m bench.bench_convergence --tasks=reconstruct --only=pmsfc_adam_0.03 --num_images=2  # a smoke

Every setting is ONE optimisation per face, evaluated at log-spaced steps (``jobs/convergence.py``: 4
points per octave from 25 steps), on held-out aligned CelebA faces the demo model never saw
(``celeba_small/009001.jpg`` onwards: the first ten are the reproduction's slow-row faces, with the same
per-image keys, so mGANprior at its own settings at step 3000 is the reproduction's row 1). The model and
loss are the reproduction's (``presets.reproduce()``: the shipped 32x32 demo generator and subspaces,
layer 3, R = 6, K = 5 / N = 30, VGG16 relu3_3 on the 32x32 images, no resize; 4x area super-resolution).
Settings (names ``<method>_<optimizer>_<lr>[_<schedule>_<T>][_random]``):

* phase 1, constant learning rates: mGANprior's own SGD (``presets.reproduce_row('mganprior')``: lr 1,
  its pixel / VGG weights) at lr 0.3, 1, 3 for ``--sgd_steps``; Adam for both methods at a sweep of
  learning rates (``--adam_lrs``, 1e-4 .. 1e-1) for ``--adam_steps`` (the paper's lr 1e-4 for
  ``--sgd_steps``);
* phase 2, from phase 1's evidence: at each method's best constant Adam lr (highest mean PSNR at
  ``--adam_steps``): ``cosine`` and ``warmup_cosine`` over ``--adam_steps`` and ``cosine`` over 400 steps
  (a schedule's points depend on its length, ``optim.iterations``), and PmSFC with a random partition of
  the channels into subspaces of the discovered sizes (``clustering.random_partition``): does the
  discovered prior help, and by how much?

Super-resolution runs a reduced set (``REDUCED_SETTINGS``: no schedules, no lr below 0.01) to fit the CPU
budget. Each finished setting is written to ``OUT/<task>/<setting>.json`` (+ ``.npz`` of the loss histories) and reused when its identity
(settings, faces, steps, the generator's and masks' contents) matches. Writes ``OUT/convergence.md`` (the
tables: every setting; for each method's best setting the steps to reach (a) mGANprior's quality at its
own settings and iterations and (b) 99 % of its own final PSNR; per-face wins) and ``--plot``
(``docs/convergence.png``: PSNR against steps, log x, one line per setting, each method's best envelope
bold). Measured at 32x32 on a CPU: the curve at 1024 may differ.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np
from absl import app
from absl import flags
from absl import logging
from etils import epath

from bench import convergence_report
from pmsfc_jax.core import clustering
from pmsfc_jax.core import config
from pmsfc_jax.core import presets
from pmsfc_jax.io import files
from pmsfc_jax.io import images
from pmsfc_jax.io import listing
from pmsfc_jax.jobs import compare
from pmsfc_jax.jobs import convergence
from pmsfc_jax.jobs import demo
from pmsfc_jax.jobs import logs
from pmsfc_jax.jobs import plots
from pmsfc_jax.jobs import reproduce
from pmsfc_jax.jobs.invert import fingerprint

_SHARED = pathlib.Path(os.environ.get('PMSFC_SHARED', pathlib.Path(__file__).resolve().parents[2] / 'shared'))
_FACES = flags.DEFINE_string(
  'faces', str(_SHARED / 'data' / 'celeba_small'), 'Aligned CelebA folder ($PMSFC_SHARED/data/celeba_small).'
)
_FIRST = flags.DEFINE_integer('first_image', 9001, 'First held-out face (009001.jpg).')
_NUM = flags.DEFINE_integer('num_images', 10, 'Faces per task.')
_TASKS = flags.DEFINE_list('tasks', ['reconstruct', 'super_resolve'], 'Tasks.')
_OUT = flags.DEFINE_string('output_dir', 'bench_out/convergence', 'Where results and tables go.')
_PLOT = flags.DEFINE_string('plot', 'docs/convergence.png', 'The figure ("" = none).')
_ADAM_LRS = flags.DEFINE_list('adam_lrs', ['1e-4', '1e-3', '1e-2', '3e-2', '1e-1'], 'Adam lrs.')
_SGD_LRS = flags.DEFINE_list('sgd_lrs', ['0.3', '1', '3'], "mGANprior's SGD lrs (its own: 1).")
_ADAM_STEPS = flags.DEFINE_integer('adam_steps', 1600, 'Steps of the Adam settings.')
_SHORT = flags.DEFINE_integer('short_schedule', 400, 'Length of the short cosine schedule.')
_SHORT_STEPS = flags.DEFINE_integer('short_steps', 800, 'Steps of the settings far from the best.')
_LONG_STEPS = flags.DEFINE_integer('long_steps', 3200, "Steps of PmSFC's best constant setting, again.")
_FIRST_STEP = flags.DEFINE_integer('first_step', 25, 'First recorded step (4 per octave from there).')
_CAP = flags.DEFINE_integer('cap_steps', 0, 'Caps every setting at this many steps (smoke runs; 0: none).')
_ONLY = flags.DEFINE_list('only', [], 'Run only these settings (phase 1 names or derived ones).')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False, 'Only write the tables / plot from recorded results.')

METRICS = ('psnr', 'ssim', 'lpips_alex', 'lpips_vgg')
OWN_STEPS = tuple(sorted(set(presets.MGANPRIOR_ITERATIONS.values())))
# The other tasks' reduced set (phase 1 names; phase 2 adds the random partition only): mGANprior's own
# settings and each method's Adam at 0.01 / 0.03 / 0.1 (reconstruction's best and its neighbours), so the
# best lr is bracketed on every task.
REDUCED_SETTINGS = (
  'pmsfc_adam_0.03',
  'mganprior_sgd_1',
  'mganprior_adam_0.03',
  'pmsfc_adam_0.1',
  'pmsfc_adam_0.01',
  'mganprior_adam_0.1',
  'mganprior_adam_0.01',
)


def _lr_name(lr: float) -> str:
  return f'{lr:.3g}'


def phase1(task: str) -> dict[str, dict]:
  """{name: spec} of the constant-lr settings of ``task`` (spec: method, optimizer, lr, steps), the most
  informative first: PmSFC at the shared fast lr, mGANprior at its own settings, then the sweeps; the
  settings far from the best (Adam lr <= 1e-3, SGD away from lr 1) for ``--short_steps``."""
  own = presets.MGANPRIOR_ITERATIONS[task]
  adam = lambda method, lr: dict(method=method, optimizer='adam', lr=lr, steps=_ADAM_STEPS.value)
  specs = {'pmsfc_adam_0.03': adam('pmsfc', 0.03)}
  specs['mganprior_sgd_1'] = dict(method='mganprior', optimizer='sgd', lr=1.0, steps=own)
  lrs = sorted(map(float, _ADAM_LRS.value), key=lambda lr: -lr)
  for method in ('pmsfc', 'mganprior'):
    for lr in lrs:
      if method == 'pmsfc' or lr >= 1e-2:  # mGANprior's own optimiser is SGD; the paper's lr is PmSFC's
        spec = adam(method, lr)
        specs.setdefault(
          f'{method}_adam_{_lr_name(lr)}', dict(spec, steps=_SHORT_STEPS.value) if lr <= 1e-3 else spec
        )
  for lr in map(float, _SGD_LRS.value):
    spec = dict(method='mganprior', optimizer='sgd', lr=lr, steps=_SHORT_STEPS.value)
    specs.setdefault(f'mganprior_sgd_{_lr_name(lr)}', spec)
  if task != 'reconstruct':
    specs = {k: v for k, v in specs.items() if k in REDUCED_SETTINGS}
  return specs


def phase2(task: str, results: dict) -> dict[str, dict]:
  """At each method's best constant Adam lr: a learning rate beyond it where the best is at the edge of the
  sweep, the schedules (reconstruction only) and PmSFC's random-partition ablation."""
  specs = {}
  for method in ('pmsfc', 'mganprior'):
    best = convergence_report.best_constant(results, method, _ADAM_STEPS.value)
    if best is None:
      continue
    base = dict(results[best]['spec'])
    swept = sorted(
      v['spec']['lr'] for k, v in results.items() if k.startswith(f'{method}_adam_') and k.count('_') == 2
    )
    if base['lr'] in (swept[0], swept[-1]) and task == 'reconstruct':
      lr = base['lr'] * (3 if base['lr'] == swept[-1] else 1 / 3)
      specs[f'{method}_adam_{_lr_name(lr)}'] = dict(base, lr=lr)
    if task == 'reconstruct':
      specs[f'{best}_cosine_{_ADAM_STEPS.value}'] = dict(base, schedule='cosine', steps=_ADAM_STEPS.value)
      specs[f'{best}_cosine_{_SHORT.value}'] = dict(base, schedule='cosine', steps=_SHORT.value)
      if method == 'pmsfc':
        specs[f'{best}_warmup_cosine_{_ADAM_STEPS.value}'] = dict(
          base, schedule='warmup_cosine', steps=_ADAM_STEPS.value
        )
    if method == 'pmsfc':
      specs[f'{best}_random'] = dict(base, random_partition=True)
      if task == 'reconstruct':  # where its curve ends: the same optimisation, longer
        specs[f'{best}_{_LONG_STEPS.value}'] = dict(base, steps=_LONG_STEPS.value)
  return specs


def setting_config(cfg: config.ReproduceConfig, task: str, spec: dict) -> config.InvertConfig:
  """The inversion config of one setting: mGANprior's own row for SGD, the shared Adam rows otherwise."""
  row = 'mganprior' if spec['optimizer'] == 'sgd' else f'{spec["method"]}_fast'
  rcfg = presets.reproduce_row(cfg, row, task)
  optim = dict(
    optimizer=spec['optimizer'],
    lr=spec['lr'],
    iterations=spec['steps'],
    schedule=spec.get('schedule', 'constant'),
  )
  return dataclasses.replace(rcfg, optim=dataclasses.replace(rcfg.optim, **optim))


def run_setting(models, cfg, task, name, spec, faces, stems, keys, out: epath.Path) -> dict:
  """Records one setting (or loads it when its identity matches); returns its result (JSON-able)."""
  if _CAP.value:
    spec = dict(spec, steps=min(spec['steps'], _CAP.value))
  rcfg = setting_config(cfg, task, spec)
  gen, sub, percep = models
  masks = sub.masks
  if spec.get('random_partition'):
    masks = clustering.masks_from_labels(clustering.random_partition(sub.labels, seed=0), len(sub.masks))
  # + the step counts of mGANprior's own scripts (presets.MGANPRIOR_ITERATIONS), for comparisons there.
  at = sorted(
    set(convergence.log_steps(min(_FIRST_STEP.value, spec['steps']), spec['steps']))
    | {s for s in OWN_STEPS if s <= spec['steps']}
  )
  sha = fingerprint.generator_sha256(gen)
  ident = {**reproduce.identity(rcfg, sha, gen.config.resolution, masks), 'faces': stems, 'steps': at}
  path = out / task / name
  if (done := _load(path, ident)) is not None:
    return done
  inputs, known = reproduce.task_inputs(rcfg.task, faces, gen.config.resolution)
  logging.info('convergence: %s / %s: %d faces x %d steps', task, name, len(faces), spec['steps'])
  rec = convergence.record(
    gen,
    percep,
    inputs,
    None if rcfg.method.name == 'mganprior' else masks,
    rcfg,
    keys,
    at,
    lambda r: compare.image_metrics(faces, r.delivered, METRICS),
    known,
  )
  result = {
    'spec': spec,
    'identity': ident,
    'steps': rec['steps'],
    'metrics': {k: v.tolist() for k, v in rec['metrics'].items()},
    'seconds': rec['seconds'],
    'seconds_per_image_step': rec['seconds'] / (len(faces) * spec['steps']),
  }
  files.save_npy(f'{path}.loss.npy', rec['loss_history'].astype(np.float32))
  files.write_json(f'{path}.json', result)
  logging.info('convergence: %s / %s done in %.0f s', task, name, rec['seconds'])
  return result


def _load(path: epath.Path, ident: dict) -> dict | None:
  js = epath.Path(f'{path}.json')
  if not js.exists():
    return None
  done = json.loads(js.read_text())
  return done if reproduce.comparable(done.get('identity')) == reproduce.comparable(ident) else None


def load_faces(cfg, size: int) -> tuple[list[str], np.ndarray]:
  paths = [
    pathlib.Path(_FACES.value) / f'{i:06d}.jpg' for i in range(_FIRST.value, _FIRST.value + _NUM.value)
  ]
  missing = [str(p) for p in paths if not p.is_file()]
  if missing:
    raise app.UsageError(f'--faces={_FACES.value}: missing {missing[0]} (and {len(missing) - 1} more)')
  return [p.stem for p in paths], np.stack([images.load_image(str(p), size) for p in paths])


def main(argv):
  del argv
  logs.quiet_libraries()
  cfg = presets.reproduce()
  out = epath.Path(_OUT.value)
  results = {}
  if not _REPORT_ONLY.value:
    models = demo.load_models(cfg)
    stems, faces = load_faces(cfg, models[0].config.resolution)
    keys = np.asarray(listing.image_keys(cfg.seed, stems))
    for task in _TASKS.value:
      (out / task).mkdir(parents=True, exist_ok=True)
      results[task] = {}
      for specs in (phase1, lambda t: phase2(t, results[t])):
        for name, spec in specs(task).items():
          if _ONLY.value and name not in _ONLY.value:
            continue
          results[task][name] = run_setting(models, cfg, task, name, spec, faces, stems, keys, out)
  results = {task: _recorded(out / task) for task in _TASKS.value}
  text = convergence_report.report(results, _ADAM_STEPS.value, out)
  files.atomic_write_bytes(out / 'convergence.md', text.encode())
  print(text)
  if _PLOT.value and any(results.values()):
    plots.plot_convergence(
      {t: {k: _curve(v) for k, v in r.items()} for t, r in results.items()}, epath.Path(_PLOT.value)
    )


def _recorded(folder: epath.Path) -> dict:
  return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob('*.json'))} if folder.exists() else {}


def _curve(res: dict) -> tuple[list[int], list[float]]:
  return res['steps'], [float(np.mean(v)) for v in res['metrics']['psnr']]


if __name__ == '__main__':
  app.run(main)
