"""The progress reporter of every long loop (pmsfc_jax/io/progress.py)."""

import logging

from pmsfc_jax.io import progress


def test_lines_at_most_every_log_every_s_and_at_the_end(caplog):
  caplog.set_level(logging.INFO, logger='absl')
  with progress.Progress(10, 'step', log_every_s=3600, done=2, bar=False) as p:
    for _ in range(8):
      p.update(1, info='loss 0.5')
  lines = [r.getMessage() for r in caplog.records]
  assert (
    len(lines) == 1 and lines[0].startswith('step 10/10 | ') and lines[0].endswith('ETA 0:00:00 | loss 0.5')
  )
  assert p.done == 10 and p.rate > 0


def test_units_and_durations(caplog):
  caplog.set_level(logging.INFO, logger='absl')
  p = progress.Progress(4, 'inversion', 'images*steps', log_every_s=0, bar=False)
  p.update(1)
  assert caplog.records[-1].getMessage().startswith('inversion 1/4 images*steps | ')
  assert 'images*steps/s, ETA ' in caplog.records[-1].getMessage()
  assert progress.fmt_duration(3725) == '1:02:05' and progress.fmt_duration(float('inf')) == '?'
