"""The batch job's ``report.html`` (jobs/invert/report.py), opened in a real headless Chromium
(tools/chromium.py: the DevTools protocol over a pipe; network emulated as cut, every request checked).

Chromium comes from Debian (``apt-get install -y chromium``, which ``.ci/run`` runs): without it the
browser tests skip naming that command, except under CI, where they fail.
"""

import json
import os
import pathlib
import time

import numpy as np
import pytest

from launch import report as report_cli
from pmsfc_jax.jobs.invert import job
from pmsfc_jax.jobs.invert import manifest
from pmsfc_jax.jobs.invert import report
from pmsfc_jax.jobs.invert import summary as summary_lib
from tests import cli_util
from tests import test_invert_job as tij
from tests.test_invert_job import assets  # noqa: F401
from tools import chromium

ROWS = 'Array.from(document.querySelectorAll("#rows tbody tr")).map(r => r.dataset.name)'
PSNRS = 'Array.from(document.querySelectorAll("#rows tbody tr .col-psnr")).map(c => c.textContent)'


@pytest.fixture(scope='module')
def browser():
  if chromium.binary() is None:
    if os.environ.get('CI'):
      pytest.fail(f'CI installs Chromium ({chromium.INSTALL}); none found')
    pytest.skip(f'no Chromium on PATH: {chromium.INSTALL}')
  with chromium.Browser(timeout=60) as b:
    yield b


@pytest.fixture(scope='module')
def small_job(assets, tmp_path_factory):  # noqa: F811
  """A finished 4-image job, one of them not an image."""
  root = tmp_path_factory.mktemp('report_job')
  tij.write_images(root / 'in', 3)
  (root / 'in' / 'broken.png').write_bytes(b'not a png at all')
  cfg = tij.make_config(
    assets, root / 'in', root / 'out', method='mganprior', iterations=3, checkpoint_every=0
  )
  summary = job.run(cfg)
  assert (summary['ok'], summary['failed']) == (3, 1)
  return root / 'out'


def _data(out: pathlib.Path) -> dict:
  text = (out / report.REPORT).read_text()
  blob = text.split('<script type="application/json" id="report-data">', 1)[1].split('</script>', 1)[0]
  return json.loads(blob.replace('<\\/', '</'))


def _open(browser, out: pathlib.Path):
  page = browser.open((out / report.REPORT).as_uri(), offline=True)
  page.wait_for('document.body.dataset.ready === "true"')
  return page


def test_report_in_chromium_counts_rows_sort_and_no_network(browser, small_job, tmp_path):
  page = _open(browser, small_job)
  counts = page.evaluate(
    '["total", "ok", "error", "pending"].map(k => document.querySelector("#count-" + k + " b").textContent)'
  )
  assert counts == ['4', '3', '1', '0']
  names = page.evaluate(ROWS)
  assert names[0] == 'broken.png' and sorted(names) == [
    'broken.png',
    'img000.png',
    'img001.png',
    'img002.png',
  ]
  assert 'not an image' in page.evaluate('document.querySelector("#rows tbody tr .col-error").textContent')
  psnr = [float(v) for v in page.evaluate(PSNRS)[1:]]
  assert psnr == sorted(psnr)  # worst first: the failure, then increasing PSNR
  assert page.evaluate('document.querySelectorAll("#rows tbody tr img").length') == 3 * 2 + 0
  assert page.evaluate('document.getElementById("stat-psnr").textContent').startswith('PSNR (dB)')
  page.click('th[data-key="psnr"]')  # a real mouse click on the column title: increasing, absent last
  up = page.evaluate(PSNRS)
  assert up[-1] == '' and [float(v) for v in up[:-1]] == sorted(psnr)
  page.click('th[data-key="psnr"]')  # again: decreasing
  assert [float(v) for v in page.evaluate(PSNRS)[:-1]] == sorted(psnr, reverse=True)
  assert (
    page.evaluate('document.querySelector(\'th[data-key="psnr"]\').getAttribute("aria-sort")') == 'descending'
  )
  page.click('th[data-key="name"]')
  assert page.evaluate(ROWS) == sorted(names)
  page.wait_for(  # every thumbnail shown loads from the disk (the broken input's says 'not shown')
    'Array.from(document.querySelectorAll("#rows tbody img")).every(i => i.complete && i.naturalWidth > 0)'
    ' && document.querySelectorAll("#rows tbody img").length === 6'
  )
  assert page.requests and all(u.startswith(('file://', 'data:')) for u in page.requests), page.requests
  shot = page.screenshot()
  assert shot[:8] == b'\x89PNG\r\n\x1a\n' and len(shot) > 10_000
  (tmp_path / 'report.png').write_bytes(shot)


def test_ten_thousand_rows_stay_paged(browser, tmp_path):
  """launch.report rebuilds the page from a 10,000-line manifest alone; one page of 50 rows is in the DOM."""
  out = tmp_path / 'big'
  out.mkdir()
  rng = np.random.default_rng(0)
  recs = [
    {
      'name': f'img{i:05d}.png',
      'stem': f'img{i:05d}',
      'path': f'/nowhere/img{i:05d}.tiff',
      'status': 'ok',
      'error': None,
      'psnr': float(rng.uniform(15, 35)),
      'ssim': 0.5,
      'seconds': 1.0,
      'steps': 300,
    }
    for i in range(10_000)
  ]
  recs[1234] = dict(recs[1234], status='error', error='/nowhere/img01234.tiff: no face found', psnr=None)
  (out / manifest.MANIFEST).write_bytes(manifest.jsonl(recs))
  cli_util.run_cli_in_process(report_cli.main, [f'--output_dir={out}'])
  t0 = time.monotonic()
  page = _open(browser, out)
  assert time.monotonic() - t0 < 20
  assert page.evaluate('document.querySelectorAll("#rows tbody tr").length') == 50
  assert page.evaluate('document.getElementById("page").textContent') == 'page 1 of 200 (10000 images)'
  assert page.evaluate(ROWS)[0] == 'img01234.png'
  page.click('#next')
  assert page.evaluate('document.getElementById("page").textContent').startswith('page 2 of 200')
  page.click('th[data-key="psnr"]')
  low = [float(v) for v in page.evaluate(PSNRS)]
  assert low == sorted(low) and low[0] == pytest.approx(min(r['psnr'] for r in recs if r['psnr']), abs=0.01)


def test_report_is_rebuilt_from_the_manifest_on_every_run(assets, tmp_path):  # noqa: F811
  tij.write_images(tmp_path / 'in', 2)
  cfg = tij.make_config(assets, tmp_path / 'in', tmp_path / 'out', method='mganprior', iterations=2)
  job.run(cfg)
  assert [r['name'] for r in _data(tmp_path / 'out')['rows']] == ['img000.png', 'img001.png']
  tij.write_images(tmp_path / 'in', 3)  # one more image: the rerun's report has all three
  job.run(cfg)
  data = _data(tmp_path / 'out')
  assert data['counts'] == {'total': 3, 'ok': 3, 'error': 0, 'pending': 0}
  assert data['stats']['steps'] == {'mean': 2.0, 'sd': 0.0, 'n': 3, 'infinite': 0}
  (tmp_path / 'out' / report.REPORT).unlink()
  summary_lib.rebuild_report(tmp_path / 'out')
  assert _data(tmp_path / 'out')['counts']['ok'] == 3
  with pytest.raises(Exception, match='no manifest'):
    summary_lib.rebuild_report(tmp_path / 'in')
