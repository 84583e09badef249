"""The convergence sweep's tables (bench/convergence_report.py) on hand-made results with known answers."""

import numpy as np
import pytest

from bench import convergence_report as cr


def _result(lr, optimizer, steps, psnr, alex=None):
  """A recorded setting: ``psnr`` (steps, faces) rows; LPIPS-Alex falls as PSNR rises unless given."""
  psnr = np.asarray(psnr, np.float64)
  alex = np.asarray(alex if alex is not None else 1 / psnr, np.float64)
  return {
    'spec': dict(optimizer=optimizer, lr=lr),
    'steps': list(steps),
    'metrics': {'psnr': psnr.tolist(), 'lpips_alex': alex.tolist()},
    'seconds_per_image_step': 0.01,
  }


STEPS = [25, 50, 100, 200, 400, 800, 1600]
OWN = [25, 50, 100, 200, 400, 800, 1600, 2000, 3000]


def _sweep():
  ramp = lambda top: [[top * s / 1600, top * s / 1600 + 1] for s in STEPS]  # two faces
  return {
    'pmsfc_adam_0.03': _result(0.03, 'adam', STEPS, ramp(32)),
    'pmsfc_adam_0.1': _result(0.1, 'adam', STEPS, ramp(30)),
    'pmsfc_adam_0.03_random': _result(0.03, 'adam', STEPS, ramp(31)),
    'mganprior_adam_0.03': _result(0.03, 'adam', STEPS, ramp(25)),
    # mGANprior at its own settings: 22 / 23 dB at its 3000 steps (reconstruction).
    'mganprior_sgd_1': _result(1.0, 'sgd', OWN, [[22 * s / 3000, 22 * s / 3000 + 1] for s in OWN]),
  }


def test_best_settings_ignore_schedules_and_the_random_partition():
  res = _sweep()
  assert cr.best_constant(res, 'pmsfc', 1600) == 'pmsfc_adam_0.03'
  assert cr.best_constant(res, 'mganprior', 1600) == 'mganprior_adam_0.03'  # SGD is not an Adam setting
  assert cr.best_setting(res, 'pmsfc', 1600) == 'pmsfc_adam_0.03'
  assert cr.best_constant(res, 'pmsfc', 3000) is None


def test_reach_table_steps():
  lines = cr._reach_table('reconstruct', _sweep(), 1600)
  rows = {r.split(' | ')[0].strip('| '): r.split(' | ') for r in lines[0].splitlines()[2:]}
  # The reference: mGANprior own at 3000 = mean(22, 23) = 22.5 dB. PmSFC's mean 32 s / 1600 + 0.5
  # reaches 22.5 at s = 1100: the first recorded step at or after it is 1600.
  assert 'steps to PSNR 22.50 (a)' in lines[0]
  assert rows['pmsfc'][1] == 'pmsfc_adam_0.03' and rows['pmsfc'][3] == '1600'
  # 99 % of its final 32.5 dB: 32 s / 1600 + 0.5 >= 32.175 only at 1600.
  assert rows['pmsfc'][5].strip(' |') == '1600'
  # mGANprior's best Adam (25 s / 1600 + 0.5) reaches 22.5 at s = 1408 -> 1600.
  assert rows['mganprior'][3] == '1600'


def test_wins_count_faces_and_the_mean_difference():
  lines = cr._wins_table('reconstruct', _sweep(), 1600)
  text = '\n'.join(lines)
  # At 1600 both faces: PmSFC 32 / 33 against the random partition's 31 / 32: 2 wins, +1.000 dB.
  assert '| pmsfc_adam_0.03 vs the random partition | 2 : 0  (+1.000) | 2 : 0  (-0.001) |' in text
  assert 'pmsfc_adam_0.03 @1600 vs mGANprior own @3000' in text
  # With a longer run of the best setting (the best by a tie at 1600), the ablation still pairs the base.
  res = _sweep()
  longer = [*res['pmsfc_adam_0.03']['metrics']['psnr'], [40, 41]]
  res['pmsfc_adam_0.03_3200'] = _result(0.03, 'adam', [*STEPS, 3200], longer)
  assert cr.best_setting(res, 'pmsfc', 1600) == 'pmsfc_adam_0.03_3200'
  text = '\n'.join(cr._wins_table('reconstruct', res, 1600))
  assert '| pmsfc_adam_0.03 vs the random partition | 2 : 0  (+1.000)' in text


@pytest.mark.parametrize('window,tolerance', [(3, 0.1), (5, 0.02)])
def test_criterion_replay_equals_a_loop_over_the_definition(window, tolerance):
  rng = np.random.default_rng(0)
  history = np.exp(-np.linspace(0, 3, 40))[None] * (1 + 0.3 * rng.random((4, 40)))
  history[1, 10:] = history[1, 9]  # a face that stops improving at step 10
  got = cr.stop_steps(history, window, tolerance)

  def first(h):
    for s in range(1, len(h) + 1):
      if s > window:
        then, now = h[: s - window].min(), h[:s].min()
        if then - now <= tolerance * abs(then):
          return s
    return len(h)

  assert got.tolist() == [first(h) for h in history]
  assert got[1] <= 10 + window + 1


def test_criterion_is_replayed_on_the_best_setting_and_its_longer_run(tmp_path):
  res = _sweep()
  res['pmsfc_adam_0.03_3200'] = _result(
    0.03, 'adam', [*STEPS, 3200], [*_sweep()['pmsfc_adam_0.03']['metrics']['psnr'], [33, 34]]
  )
  (tmp_path / 'reconstruct').mkdir()
  flat = np.ones((2, 1600))
  flat[:, :100] = np.linspace(2, 1, 100)  # flat after step 100: stops at 100 + window (+1)
  np.save(tmp_path / 'reconstruct' / 'pmsfc_adam_0.03.loss.npy', flat)
  np.save(tmp_path / 'reconstruct' / 'pmsfc_adam_0.03_3200.loss.npy', np.ones((2, 3200)))
  text = '\n'.join(cr._criterion_table('reconstruct', res, 1600, tmp_path))
  assert 'replayed on `pmsfc_adam_0.03` (1600 steps, final 32.50 dB)' in text
  assert 'replayed on `pmsfc_adam_0.03_3200` (3200 steps, final 33.50 dB)' in text
  # Window 50 on the first: the best loss is 1 from step 100 on, so every face stops at step 150 (the best
  # of its first 100 steps equals the best of 150); PSNR at the last recorded step before, 100: 2.5 dB.
  assert '| 50 | 0.0050 | 150 (150-150) | 91% | 2.50 | -30.00 |' in text
  assert '| 400 | 0.0050 | 500 (500-500) | 69% | 8.50 | -24.00 |' in text
