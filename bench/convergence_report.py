"""The tables of the convergence sweep (``bench/bench_convergence.py``, issue 19): PSNR per setting at
chosen steps, the steps each method's best setting needs to reach mGANprior's own quality and 99 % of its
own final PSNR, per-face wins, and early stop's criterion replayed on the recorded loss histories.

``results`` is ``{task: {setting name: result}}`` as ``bench_convergence.run_setting`` records them
(``spec``, ``steps``, ``metrics`` {name: per step, per face}, ``seconds_per_image_step``);
``adam_steps`` is the sweep's ``--adam_steps`` (where settings are compared), ``out`` its
``--output_dir`` (the ``.loss.npy`` histories).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from pmsfc_jax.core import early_stop
from pmsfc_jax.core import presets
from pmsfc_jax.io import tables
from pmsfc_jax.jobs import convergence
from pmsfc_jax.jobs import reproduce


def mean_at(res: dict, metric: str, step: int) -> float:
  return float(np.mean(res['metrics'][metric][res['steps'].index(step)]))


def best_constant(results: dict, method: str, at: int) -> str | None:
  """The name of ``method``'s constant-lr Adam setting with the highest mean PSNR at step ``at``."""
  cands = {
    k: mean_at(v, 'psnr', at)
    for k, v in results.items()
    if k.startswith(f'{method}_adam_') and k.count('_') == 2 and at in v['steps']
  }
  return max(cands, key=cands.get) if cands else None


def _mean_sd(values) -> str:
  v = np.asarray(values, np.float64)
  return f'{v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.2f}'


def report(results: dict, adam_steps: int, out: epath.Path) -> str:
  """The markdown tables of docs/convergence.md (see the module docstring)."""
  lines = []
  for task, res in results.items():
    if not res:
      continue
    shown = (25, 100, 200, 400, 800, 1600, 3000)
    lines += [f'### {reproduce.TITLES[task].format(f=4)}', '']
    body = []
    order = sorted(res, key=lambda k: (k.split('_')[0], k))
    for name in order:
      r = res[name]
      cells = [_mean_sd(r['metrics']['psnr'][r['steps'].index(s)]) if s in r['steps'] else '' for s in shown]
      last = r['steps'][-1]
      body.append(
        [name, *cells, f'{mean_at(r, "lpips_alex", last):.4f}', f'{r["seconds_per_image_step"] * 1e3:.0f}']
      )
    header = ['setting'] + [f'PSNR @{s}' for s in shown] + ['LPIPS-Alex @last', 'ms / image-step']
    lines += [tables.markdown(header, body), '']
    lines += _reach_table(task, res, adam_steps) + _wins_table(task, res, adam_steps)
    lines += _criterion_table(task, res, adam_steps, out)
  return '\n'.join(lines) + '\n'


def stop_steps(history: np.ndarray, window: int, tolerance: float) -> np.ndarray:
  """Per face, the step at which ``early_stop.converged`` first holds on its recorded loss history (the
  last step if never): where early stop would have stopped it."""
  total = history.shape[1]
  steps = jnp.arange(1, total + 1)
  fired = jax.vmap(lambda h: jax.vmap(lambda s: early_stop.converged(h, s, window, tolerance))(steps))(
    jnp.asarray(history, jnp.float32)
  )
  fired = np.asarray(fired)
  return np.where(fired.any(1), fired.argmax(1) + 1, total)


def _criterion_table(task: str, res: dict, adam_steps: int, out: epath.Path) -> list[str]:
  """Early stop's criterion on PmSFC's best constant setting, replayed on its loss histories (the
  ``--adam_steps`` run and the longer run of the same setting, ``<best>_<steps>``): where each (window,
  tolerance) would have stopped the faces and the PSNR there (at the last recorded step at or before the
  stop: a lower bound)."""
  best = best_constant(res, 'pmsfc', adam_steps)
  if best is None:
    return []
  longer = sorted((k for k in res if k.startswith(f'{best}_') and k[len(best) + 1 :].isdigit()), key=len)
  lines = []
  for name in [best, *longer]:
    path = epath.Path(out) / task / f'{name}.loss.npy'
    if path.exists():
      lines += _replay(name, res[name], np.load(path))
  return lines


def _replay(name: str, r: dict, history: np.ndarray) -> list[str]:
  steps, psnr = np.asarray(r['steps']), np.asarray(r['metrics']['psnr'])
  final = psnr[-1].mean()
  body = []
  for window in (50, 100, 200, 400):
    if window >= history.shape[1]:
      continue
    for tol in (0.005, 0.01, 0.02, 0.05):
      stop = stop_steps(history, window, tol)
      at = np.clip(np.searchsorted(steps, stop, side='right') - 1, 0, len(steps) - 1)
      p = psnr[at, np.arange(len(stop))].mean()
      saved = 1 - stop.mean() / history.shape[1]
      body.append(
        [
          window,
          tol,
          f'{stop.mean():.0f} ({stop.min()}-{stop.max()})',
          f'{saved:.0%}',
          f'{p:.2f}',
          f'{p - final:+.2f}',
        ]
      )
  header = [
    'window',
    'tolerance',
    'mean stop step (range)',
    'steps saved',
    'PSNR at the stop',
    'vs all steps',
  ]
  return [
    f'Early stop replayed on `{name}` ({history.shape[1]} steps, final {final:.2f} dB):',
    '',
    tables.markdown(header, body),
    '',
  ]


def best_setting(res: dict, method: str, at: int) -> str | None:
  """``method``'s setting with the highest mean PSNR at ``--adam_steps`` (the random partition apart)."""
  cands = [
    k for k, v in res.items() if k.startswith(method) and not k.endswith('_random') and at in v['steps']
  ]
  return max(cands, key=lambda k: (mean_at(res[k], 'psnr', at), len(res[k]['steps']))) if cands else None


def _own(task: str, res: dict) -> tuple[dict, int] | None:
  own = res.get('mganprior_sgd_1')
  steps = presets.MGANPRIOR_ITERATIONS[task]
  return None if own is None or steps not in own['steps'] else (own, steps)


def _reach_table(task: str, res: dict, adam_steps: int) -> list[str]:
  """Per method's best setting: its final values and the steps it needs to reach mGANprior's quality at
  its own settings and iterations (PSNR and LPIPS-Alex) and 99 % of its own final PSNR."""
  own = _own(task, res)
  if own is None:
    return []
  (o, own_steps), body = own, []
  ref_psnr, ref_alex = mean_at(o, 'psnr', own_steps), mean_at(o, 'lpips_alex', own_steps)
  for method in ('pmsfc', 'mganprior'):
    best = best_setting(res, method, adam_steps)
    if best is None:
      continue
    r = res[best]
    psnr = [float(np.mean(v)) for v in r['metrics']['psnr']]
    alex = [float(np.mean(v)) for v in r['metrics']['lpips_alex']]
    last = r['steps'][-1]
    body.append(
      [
        method,
        best,
        f'{psnr[-1]:.2f} / {alex[-1]:.4f} @{last}',
        convergence.steps_to_reach(r['steps'], psnr, ref_psnr) or f'> {last}',
        convergence.steps_to_reach(r['steps'], alex, ref_alex, higher_is_better=False) or f'> {last}',
        convergence.steps_to_reach(r['steps'], psnr, 0.99 * psnr[-1]),
      ]
    )
  header = [
    'method',
    'best setting',
    'final PSNR / LPIPS-Alex',
    f'steps to PSNR {ref_psnr:.2f} (a)',
    f'steps to LPIPS-Alex {ref_alex:.4f} (a)',
    'steps to 99 % of its final PSNR (b)',
  ]
  note = (
    f'(a): mGANprior at its own settings (SGD lr 1) after its own {own_steps} iterations; steps are the first '
    'recorded step (4 per octave, plus 1000 / 1500 / 2000 / 3000) at which the mean over the faces reaches it.'
  )
  return [tables.markdown(header, body), '', note, '']


def _wins_table(task: str, res: dict, at: int) -> list[str]:
  """Per-face wins (PSNR, LPIPS-Alex) of the pairs that answer the sweep's questions."""
  pairs = []
  pm, mg = best_setting(res, 'pmsfc', at), best_setting(res, 'mganprior', at)
  if pm and mg:
    pairs.append((f'{pm} vs {mg}', res[pm], at, res[mg], at))
  base = best_constant(res, 'pmsfc', at)  # the random partition runs at the best constant setting
  if base and f'{base}_random' in res:
    pairs.append((f'{base} vs the random partition', res[base], at, res[f'{base}_random'], at))
  own = _own(task, res)
  if pm and own is not None:
    pairs.append((f'{pm} @{at} vs mGANprior own @{own[1]}', res[pm], at, own[0], own[1]))
  body = []
  for label, a, sa, b, sb in pairs:
    cells = []
    for metric, higher in (('psnr', True), ('lpips_alex', False)):
      va = np.asarray(a['metrics'][metric][a['steps'].index(sa)])
      vb = np.asarray(b['metrics'][metric][b['steps'].index(sb)])
      better = va > vb if higher else va < vb
      cells.append(f'{int(better.sum())} : {int((~better & (va != vb)).sum())}  ({np.mean(va - vb):+.3f})')
    body.append([label, *cells])
  if not body:
    return []
  return [tables.markdown(['faces won (mean difference)', 'PSNR', 'LPIPS-Alex'], body), '']
