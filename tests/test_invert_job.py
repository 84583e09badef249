"""The batch inversion job (pmsfc_jax/jobs/invert/), run in-process on a tiny 16x16 generator."""

import json
import logging
import os
import pathlib
import re
import signal
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from pmsfc_jax.core import inversion
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import files
from pmsfc_jax.io import listing
from pmsfc_jax.io import masks
from pmsfc_jax.jobs import exit_codes
from pmsfc_jax.jobs.invert import batch_state
from pmsfc_jax.jobs.invert import fingerprint
from pmsfc_jax.jobs.invert import job
from pmsfc_jax.jobs.invert import manifest as manifest_lib
from pmsfc_jax.jobs.invert import summary as summary_lib
from pmsfc_jax.models import pggan
from tests import configs
from tests import test_images

REPO = pathlib.Path(__file__).resolve().parents[1]
GEN_CFG = pggan.GeneratorConfig(resolution=16, z_dim=16, fmaps_base=256, fmaps_max=16)
PYTHON = sys.executable


# ------------------------------------------------------------------------------------------------
# Helpers shared with test_kill_resume / test_distributed / test_invert_cli.


@pytest.fixture(scope='session')
def assets(tmp_path_factory):
  """A saved 16x16 generator and a 2-subspace split of its 16 layer-3 channels."""
  root = tmp_path_factory.mktemp('pipeline_assets')
  gen = pggan.Generator(GEN_CFG, pggan.init_params(GEN_CFG, jax.random.key(1)))
  checkpoints.save_generator(root / 'gen', GEN_CFG, gen.params)
  sub = root / 'subspaces'
  sub.mkdir()
  c = pggan.feature_shape(GEN_CFG, 3)[-1]
  labels = np.arange(c) % 2
  masks = np.stack([labels == r for r in range(2)])
  np.save(sub / 'masks.npy', masks)
  np.save(sub / 'labels.npy', labels)
  (sub / 'subspaces.json').write_text(json.dumps({'layer': 3, 'num_subspaces': 2, 'channels': c}))
  return {'generator': str(root / 'gen'), 'subspaces': str(sub), 'gen': gen}


def write_images(folder: pathlib.Path, n: int, seed: int = 0, size=(20, 24), prefix='img') -> list[str]:
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  names = []
  for i in range(n):
    arr = rng.random((size[0], size[1], 3)) * 80 + np.linspace(0, 170, size[1])[None, :, None]
    name = f'{prefix}{i:03d}.png'
    Image.fromarray(arr.astype(np.uint8)).save(folder / name)
    names.append(name)
  return names


def make_config(assets, images, out, method='pmsfc', task='reconstruct', **overrides):
  """The tiny job: ``method,task,local`` presets, 6 steps in chunks of 2, no VGG term (flat overrides)."""
  base = dict(
    generator=assets['generator'],
    subspaces=assets['subspaces'] if method == 'pmsfc' else '',
    images=str(images),
    output_dir=str(out),
    num_codes=2,
    iterations=6,
    checkpoint_every=2,
    batch_size=4,
    perceptual_weight=0.0,
    lr=0.05,
    seed=3,
    num_workers=2,
    log_every_s=0.0,
  )
  return configs.invert(f'{method},{task},local', **{**base, **overrides})


def override(config, **flat):
  return configs.with_values(config, **flat)


def cli_args(config, config_file: bool = True) -> list[str]:
  """launch.invert flags reproducing ``make_config`` (for subprocess runs), with an explicit
  ``--config=FILE:presets`` or (``config_file=False``) the default file with ``--preset``."""
  m, t = config.method.name, config.task.name
  cfg = [f'--config={REPO}/launch/configs/invert.py:{m},{t},local'] if config_file else ['--preset=local']
  return [
    PYTHON,
    '-m',
    'launch.invert',
    f'--generator={config.model.generator}',
    f'--images={config.job.images}',
    f'--output_dir={config.job.output_dir}',
    f'--method={m}',
    f'--task={t}',
    *cfg,
    '--config.loss.perceptual_weight=0',
    f'--iterations={config.optim.iterations}',
    f'--batch_size={config.job.batch_size}',
    f'--num_codes={config.method.num_codes}',
    f'--checkpoint_every={config.job.checkpoint_every}',
    f'--config.optim.lr={config.optim.lr}',
    f'--seed={config.seed}',
    '--config.job.num_workers=2',
    '--config.job.log_every_s=0',
  ] + ([f'--subspaces={config.model.subspaces}'] if config.model.subspaces else [])


def manifest(out) -> list[dict]:
  lines = (pathlib.Path(out) / 'manifest.jsonl').read_text().splitlines()
  return [json.loads(line) for line in lines]


def load_result(out, stem):
  with np.load(pathlib.Path(out) / f'{stem}.npz') as z:
    npz = {k: z[k] for k in z.files}
  png = np.asarray(Image.open(pathlib.Path(out) / f'{stem}.png'))
  return npz, png


def assert_same_results(out_a, out_b, stems, atol=2e-5):
  for stem in stems:
    a, pa = load_result(out_a, stem)
    b, pb = load_result(out_b, stem)
    for k in ('codes', 'weights', 'loss_history'):
      np.testing.assert_allclose(a[k], b[k], atol=atol, rtol=1e-4, err_msg=f'{stem}: {k}')
    np.testing.assert_array_equal(a['key'], b['key'])
    assert np.abs(pa.astype(int) - pb.astype(int)).max() <= 1, stem


def assert_complete(out, names):
  """Every name exactly once in the manifest and on disk; no temporary files or checkpoints left."""
  recs = manifest(out)
  got = [r['name'] for r in recs]
  assert sorted(got) == sorted(names), (got, names)
  for r in recs:
    assert r['status'] == 'ok', r
    assert (pathlib.Path(out) / f'{r["stem"]}.png').is_file()
    assert (pathlib.Path(out) / f'{r["stem"]}.npz').is_file()
  leftovers = [p.name for p in pathlib.Path(out).iterdir() if files.TMP_MARKER in p.name]
  assert not leftovers
  ck = pathlib.Path(out) / batch_state.CHECKPOINTS
  assert not ck.exists() or not any(ck.iterdir()), list(ck.iterdir())


# ------------------------------------------------------------------------------------------------
# Listing, keys.


def test_list_inputs_directory_glob_and_list_file(tmp_path):
  d = tmp_path / 'in'
  for rel in (
    'a/x.png',
    'b/x.png',
    'a/x.jpg',
    'a__x.png',
    'c/d/y.JPEG',
    'notes.txt',
    '.hidden.png',
    '.cache/z.png',
    'sp ace.png',
  ):
    (d / rel).parent.mkdir(parents=True, exist_ok=True)
    (d / rel).write_bytes(b'x')
  (d / 'out').mkdir()
  (d / 'out' / 'r.png').write_bytes(b'x')
  items = listing.list_inputs(str(d), exclude=str(d / 'out'))
  names = [it.name for it in items]
  assert names == ['a/x.jpg', 'a/x.png', 'a__x.png', 'b/x.png', 'c/d/y.JPEG', 'sp ace.png']
  stems = {it.name: it.stem for it in items}
  assert stems['b/x.png'] == 'b__x' and stems['c/d/y.JPEG'] == 'c__d__y' and stems['sp ace.png'] == 'sp_ace'
  for n in ('a/x.jpg', 'a/x.png', 'a__x.png'):  # Same 'a__x' stem: each gets a name hash.
    assert stems[n].startswith('a__x-') and len(stems[n]) == len('a__x-') + 8
  assert len({s for s in stems.values()}) == len(stems)

  glob_items = listing.list_inputs(str(d / '**' / 'x.*'))
  assert [it.name for it in glob_items] == ['a/x.jpg', 'a/x.png', 'b/x.png']

  lst = tmp_path / 'list.txt'
  lst.write_text(f'# comment\n\nin/b/x.png\n{d}/c/d/y.JPEG\nin/b/x.png\nmissing.png\n')
  listed = listing.list_inputs(str(lst))
  assert [(it.name, it.path) for it in listed] == sorted(
    [
      (str(d / 'c/d/y.JPEG').lstrip('/'), str(d / 'c/d/y.JPEG')),
      ('in/b/x.png', str(tmp_path / 'in/b/x.png')),
      ('missing.png', str(tmp_path / 'missing.png')),
    ]
  )
  assert [it.name for it in listing.list_inputs(str(d / 'b' / 'x.png'))] == ['x.png']

  with pytest.raises(FileNotFoundError, match='is neither a directory, a glob, a list file nor an image'):
    listing.list_inputs(str(tmp_path / 'nope'))
  with pytest.raises(FileNotFoundError, match='the glob matches no files'):
    listing.list_inputs(str(tmp_path / '*.gif'))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='holds no files with an image extension'):
    listing.list_inputs(str(tmp_path / 'empty'))


def test_image_keys_depend_only_on_seed_and_name():
  k = listing.image_keys(0, ['a.png', 'b/c.png', 'a.png'])
  assert k.shape == (3, 2) and k.dtype == np.uint32
  np.testing.assert_array_equal(k[0], k[2])
  assert not np.array_equal(k[0], k[1])
  np.testing.assert_array_equal(listing.image_keys(0, ['b/c.png'])[0], k[1])
  assert not np.array_equal(listing.image_keys(1, ['a.png'])[0], k[0])


def test_manifest_repairs_torn_and_duplicate_lines(tmp_path):
  m = manifest_lib.Manifest(tmp_path, 0, 1)
  m.append({'name': 'a', 'status': 'ok'})
  m.append({'name': 'b', 'status': 'error'})
  with open(m.path, 'a') as f:
    f.write('{"name": "a", "status": "ok"}\n{"name": "c", "sta')
  done = m.load_done()
  assert sorted(done) == ['a', 'b']
  assert [json.loads(x)['name'] for x in m.path.read_text().splitlines()] == ['a', 'b']
  assert sorted(m.load_done(retry_failed=True)) == ['a']
  assert [json.loads(x)['name'] for x in m.path.read_text().splitlines()] == ['a']


# ------------------------------------------------------------------------------------------------
# Whole-job behaviour.


def test_bad_inputs_are_reported_and_good_ones_finish(assets, tmp_path):
  d = tmp_path / 'in'
  good = write_images(d, 3)
  bad = {name: data for name, (data, _) in test_images.bad_inputs().items()}
  for name, data in bad.items():
    (d / f'{name}.png').write_bytes(data)
  jpg = test_images.encode(Image.fromarray(test_images.gradient(32, 32)), 'JPEG')
  (d / 'truncated.jpg').write_bytes(jpg[: len(jpg) // 2])
  # Unreadable: tests run as root (chmod 000 does not stop root), so use a dangling symlink, which
  # the listing keeps (it has an image extension) and reading refuses.
  (d / 'dangling.png').symlink_to(tmp_path / 'gone.png')
  config = make_config(assets, d, tmp_path / 'out', method='mganprior', iterations=2, checkpoint_every=0)
  summary = job.run(config)
  assert summary['exit_code'] == exit_codes.SOME_FAILED
  recs = {r['name']: r for r in manifest(config.job.output_dir)}
  assert len(recs) == len(good) + len(bad) + 2
  for name in good:
    assert recs[name]['status'] == 'ok' and recs[name]['error'] is None
    assert np.isfinite(recs[name]['psnr']) and -1 <= recs[name]['ssim'] <= 1
  expect = {
    'zero-byte.png': 'empty file (0 bytes)',
    'text.png': 'not an image Pillow can identify',
    'truncated-png.png': 'truncated file',
    'truncated-jpeg.png': 'truncated file',
    'truncated.jpg': 'truncated file',
    'bomb.png': 'refused as a decompression bomb',
    'dangling.png': 'cannot read (FileNotFoundError',
  }
  for name, reason in expect.items():
    r = recs[name]
    assert r['status'] == 'error', r
    assert r['error'].startswith(str(d / name) + ': '), r
    assert reason in r['error'], r
    assert not (pathlib.Path(config.job.output_dir) / f'{r["stem"]}.png').exists()
  s = json.loads((pathlib.Path(config.job.output_dir) / 'summary.json').read_text())
  assert (s['ok'], s['failed'], s['pending'], s['total']) == (3, len(expect), 0, 3 + len(expect))
  assert sorted(f['name'] for f in s['failures']) == sorted(expect)
  table = summary_lib.format_summary(config.job.output_dir, summary)
  assert 'bomb.png' in table and f'ok 3, failed {len(expect)}' in table
  # Errors are final on a plain rerun; --retry_failed retries them (a repaired file now succeeds).
  (d / 'zero-byte.png').write_bytes((d / good[0]).read_bytes())
  assert job.run(config)['this_process'].get('ok', 0) == 0
  config = override(config, retry_failed=True)
  s = job.run(config)
  assert s['this_process']['ok'] == 1 and s['failed'] == len(expect) - 1
  recs = manifest(config.job.output_dir)
  assert len(recs) == len({r['name'] for r in recs}) == len(good) + len(bad) + 2
  assert [r['status'] for r in recs if r['name'] == 'zero-byte.png'] == ['ok']


def test_four_devices_equal_one_device_and_batch_composition(assets, tmp_path):
  d = tmp_path / 'in'
  names = write_images(d, 5)
  c4 = make_config(assets, d, tmp_path / 'd4', batch_size=4, num_devices=4)  # batches 4 + 1 (padded)
  c1 = make_config(assets, d, tmp_path / 'd1', batch_size=3, num_devices=1)  # batches 3 + 2
  assert job.run(c4)['exit_code'] == 0
  assert job.run(c1)['exit_code'] == 0
  assert jax.local_device_count() == 4
  stems = [n[:-4] for n in names]
  assert_same_results(c4.job.output_dir, c1.job.output_dir, stems)
  npz, png = load_result(c4.job.output_dir, stems[0])
  assert npz['codes'].shape == (2, 2, GEN_CFG.z_dim) and npz['masks'].shape == (2, 16)
  assert png.shape == (16, 16, 3)
  assert json.loads(str(npz['config']))['method']['name'] == 'pmsfc'
  # The optimisation made progress (loss history is recorded and decreasing overall).
  assert np.all(np.isfinite(npz['loss_history'])) and npz['loss_history'][-1] < npz['loss_history'][0]


def test_rerun_is_idempotent_and_changed_config_is_refused(assets, tmp_path):
  d = tmp_path / 'in'
  write_images(d, 2)
  config = make_config(assets, d, tmp_path / 'out', method='mganprior', iterations=2)
  job.run(config)
  before = (pathlib.Path(config.job.output_dir) / 'manifest.jsonl').read_text()
  write_images(d, 1, seed=9, prefix='new')  # A new image joins the list: only it is computed.
  config = override(config, batch_size=1)  # Batch size does not change results: accepted.
  s = job.run(config)
  after = (pathlib.Path(config.job.output_dir) / 'manifest.jsonl').read_text()
  assert after.startswith(before) and len(after.splitlines()) == 3
  assert s['this_process'].get('ok', 0) == 1 and s['exit_code'] == 0
  config = override(config, lr=0.5)
  with pytest.raises(
    fingerprint.ConfigMismatchError,
    match=r'differences: config\.optim\.lr: 0\.05 -> 0\.5\. '
    r'Use another --output_dir, or pass --overwrite_config',
  ):
    job.run(config)
  config = override(config, overwrite_config=True)
  s = job.run(config)
  assert s['this_process']['ok'] == 3 and len(manifest(config.job.output_dir)) == 3


@pytest.mark.parametrize('schedule', ['constant', 'warmup_cosine'])  # resume mid-schedule too (issue 19)
def test_sigterm_saves_state_and_resume_matches_uninterrupted(assets, tmp_path, monkeypatch, schedule):
  d = tmp_path / 'in'
  names = write_images(d, 3)
  sched = {'optim.schedule': schedule, 'optim.warmup_fraction': 0.5}
  ref = make_config(assets, d, tmp_path / 'ref', batch_size=2, **sched)
  job.run(ref)
  config = make_config(assets, d, tmp_path / 'out', batch_size=2, **sched)
  run_steps, calls = inversion.run_steps, []

  def chunk_then_sigterm(*args, **kwargs):  # Mid first batch, after step 4 of 6 (chunks of 2).
    out = run_steps(*args, **kwargs)
    calls.append(1)
    if len(calls) == 2:
      os.kill(os.getpid(), signal.SIGTERM)
    return out

  monkeypatch.setattr(inversion, 'run_steps', chunk_then_sigterm)
  s = job.run(config)
  assert s['exit_code'] == exit_codes.PREEMPTED and s['preempted'] and s['pending'] == 3
  ck = pathlib.Path(config.job.output_dir) / batch_state.CHECKPOINTS / 'p0'
  assert sorted(p.name for p in ck.iterdir() if p.name.isdigit()) == ['4']
  monkeypatch.setattr(inversion, 'run_steps', run_steps)
  s = job.run(config)
  assert s['exit_code'] == 0 and s['this_process']['steps'] == 2 * 2 + 6  # resumed batch: 2 steps left.
  assert_complete(config.job.output_dir, names)
  assert_same_results(ref.job.output_dir, config.job.output_dir, [n[:-4] for n in names])


@pytest.mark.parametrize('task', ['colorize', 'super_resolve', 'inpaint'])
def test_tasks(assets, tmp_path, task, request):
  d = tmp_path / 'in'
  write_images(d, 1, size=(16, 16))
  extra = {}
  if task == 'inpaint':  # mGANprior's soft RGBA mask (shared data: its repository has no licence)
    extra['mask'] = str(request.getfixturevalue('shared_data') / 'images' / 'masks' / 'mask-1.png')
  if task == 'super_resolve':
    extra['factor'] = 2
  config = make_config(assets, d, tmp_path / 'out', task=task, iterations=2, checkpoint_every=0, **extra)
  assert job.run(config)['exit_code'] == 0
  png = np.asarray(Image.open(pathlib.Path(config.job.output_dir) / 'img000.png')).astype(np.float64)
  assert png.shape == (16, 16, 3)
  src = np.asarray(Image.open(d / 'img000.png').convert('RGB')).astype(np.float64)
  if task == 'colorize':  # The delivered colour image keeps the input's luminance (up to uint8 rounding)
    luma = lambda x: x @ np.array([0.299, 0.587, 0.114])  # wherever saving did not clip a channel.
    unclipped = np.all((png > 0) & (png < 255), axis=-1)
    assert unclipped.sum() >= 10
    np.testing.assert_allclose(luma(png)[unclipped], luma(src)[unclipped], atol=2.5)
  if task == 'super_resolve':  # The input was brought to 16 / 2 = 8 pixels; metrics compare at 8x8.
    assert np.isfinite(manifest(config.job.output_dir)[0]['psnr'])
  if task == 'inpaint':  # Known pixels are the input's.
    known = masks.load_inpainting_mask(extra['mask'], size=16)[..., 0] > 0.5
    np.testing.assert_allclose(png[known], src[known], atol=1)


def test_two_hundred_images_in_one_run(assets, tmp_path):
  d = tmp_path / 'in'
  names = write_images(d, 200, size=(16, 16))
  config = make_config(
    assets,
    d,
    tmp_path / 'out',
    method='mganprior',
    iterations=2,
    checkpoint_every=0,
    batch_size=64,
    num_codes=2,
  )
  s = job.run(config)
  assert (s['exit_code'], s['ok'], s['failed'], s['pending']) == (0, 200, 0, 0)
  assert_complete(config.job.output_dir, names)


def test_progress_is_reported_inside_a_batch(assets, tmp_path, caplog):
  caplog.set_level(logging.INFO, logger='absl')
  d = tmp_path / 'in'
  write_images(d, 2)
  config = make_config(assets, d, tmp_path / 'out', batch_size=2, checkpoint_every=0)  # one batch, 6 steps
  job.run(config)
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('inversion ')]
  done = [
    int(re.match(r'inversion (\d+)/12 images\*steps \| [\d.]+ images\*steps/s, ETA ', m).group(1))
    for m in lines
  ]
  assert any(0 < n < 12 for n in done), lines  # during the batch, not only when it ends
  assert done[-1] == 12 and 'images 2/2 (ok 2, failed 0)' in lines[-1]
