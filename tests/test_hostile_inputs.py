"""Issue #11, inputs under hostile conditions: special files, huge files, symlink loops, the output folder
inside / equal to / linked into the inputs, clashing stems, folders named like images.

In-process runs on the tiny 16x16 generator of ``tests/test_invert_job.py``; the special-file job run
(FIFO, /dev/zero, a sparse 1 GiB file, memory measured in the child) is in ``test_hostile_cli.py``.
"""

import hashlib

import pytest

from pmsfc_jax.core import config
from pmsfc_jax.io import images
from pmsfc_jax.io import listing
from pmsfc_jax.jobs import exit_codes
from pmsfc_jax.jobs.invert import job
from tests.test_invert_job import assets  # noqa: F401
from tests.test_invert_job import make_config
from tests.test_invert_job import manifest
from tests.test_invert_job import write_images


def test_read_bytes_bounds(tmp_path):
  png = tmp_path / 'a.png'
  images.save_image(png, images.to_float(images.np.zeros((4, 4, 3), images.np.uint8)))
  size = png.stat().st_size
  assert images.read_bytes(png, max_bytes=size) == png.read_bytes()
  with pytest.raises(
    images.ImageDecodeError, match=f'{size} bytes exceeds the input size limit of {size - 1}'
  ):
    images.read_bytes(png, max_bytes=size - 1)
  (tmp_path / 'gif.png').write_bytes(b'GIF89a' + b'\0' * 10)  # a known header: handed to the decoder
  assert images.read_bytes(tmp_path / 'gif.png')[:6] == b'GIF89a'
  (tmp_path / 'zip.png').write_bytes(b'PK\x03\x04' + b'\0' * 100)  # refused from its first bytes
  with pytest.raises(images.ImageDecodeError, match='first bytes match no image format'):
    images.read_bytes(tmp_path / 'zip.png')


def _tree(tmp_path):
  d = tmp_path / 'in'
  (d / 'sub').mkdir(parents=True)
  for rel in ('a.png', 'sub/b.png'):
    (d / rel).write_bytes(b'x')
  (d / 'self').symlink_to('.')
  (d / 'self2').symlink_to('.')
  (d / 'sub' / 'up').symlink_to('..')
  (d / 'alias').symlink_to('sub')  # a second name for a folder inside the tree
  (tmp_path / 'ext').mkdir()
  (tmp_path / 'ext' / 'c.png').write_bytes(b'x')
  (d / 'l1').symlink_to(tmp_path / 'ext')  # two links to one folder outside: followed once
  (d / 'l2').symlink_to(tmp_path / 'ext')
  return d


@pytest.mark.parametrize('mode', ['directory', 'glob **', 'glob one level'])
def test_symlinked_folders_are_followed_at_most_once(tmp_path, mode):
  d = _tree(tmp_path)
  spec = {'directory': str(d), 'glob **': f'{d}/**/*.png', 'glob one level': f'{d}/*/*.png'}[mode]
  names = [it.name for it in listing.list_inputs(spec)]  # terminates (two self links: it never did)
  expected = ['a.png', 'l1/c.png', 'sub/b.png']  # each file once, under its own folder's name
  assert names == (expected[1:] if mode == 'glob one level' else expected)


def test_list_file_entries_and_folders_are_reported_not_dropped(assets, tmp_path):  # noqa: F811
  d = tmp_path / 'in'
  write_images(d, 2)
  (d / 'x.png').mkdir()  # a folder named like an image: matched by the glob, reported
  cfg = make_config(assets, f'{d}/*.png', tmp_path / 'out', method='mganprior', iterations=1)
  s = job.run(cfg)
  assert s['exit_code'] == exit_codes.SOME_FAILED
  recs = {r['name']: r for r in manifest(tmp_path / 'out')}
  assert recs['x.png']['error'] == f'{d}/x.png: cannot read: is a directory'
  assert recs['img000.png']['status'] == recs['img001.png']['status'] == 'ok'


def test_an_input_named_like_a_hashed_stem_does_not_kill_the_job(assets, tmp_path):  # noqa: F811
  d = tmp_path / 'in'
  write_images(d, 1, prefix='x')  # x000.png
  (d / 'x000.jpg').write_bytes((d / 'x000.png').read_bytes())  # clashes with x000.png: both hashed
  clash = f'x000-{hashlib.sha256(b"x000.png").hexdigest()[:8]}.png'  # literally that hashed stem
  (d / clash).write_bytes((d / 'x000.png').read_bytes())
  items = listing.list_inputs(str(d))
  stems = {it.name: it.stem for it in items}
  assert stems[clash] == clash[:-4]  # a unique stem is kept as it is ...
  assert stems['x000.png'] == f'x000-{hashlib.sha256(b"x000.png").hexdigest()[:16]}'  # ... the hash grows
  assert len({s.lower() for s in stems.values()}) == 3
  assert listing.list_inputs(str(d)) == items  # deterministic
  s = job.run(make_config(assets, d, tmp_path / 'out', method='mganprior', iterations=1))
  assert (s['exit_code'], s['ok']) == (0, 3)
  assert {p.name for p in (tmp_path / 'out').glob('*.npz')} == {f'{v}.npz' for v in stems.values()}


@pytest.mark.parametrize('where', ['equal', 'ancestor', 'equal through a link'])
def test_output_folder_equal_to_or_above_the_inputs_is_refused_before_writing(assets, tmp_path, where):  # noqa: F811
  d = tmp_path / 'data' / 'in'
  write_images(d, 1)
  out = {'equal': d, 'ancestor': tmp_path / 'data', 'equal through a link': tmp_path / 'link'}[where]
  if where == 'equal through a link':
    out.symlink_to(d)
  before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*'))
  cfg = make_config(assets, d, out, method='mganprior', iterations=1)
  with pytest.raises(config.ConfigError, match=r"--output_dir='.*' is (the|an ancestor of the) input folder"):
    job.run(cfg)
  assert job.main(cfg) == exit_codes.USAGE
  assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*')) == before  # no config.json anywhere


@pytest.mark.parametrize('where', ['inside', 'linked into the inputs'])
def test_output_folder_in_the_inputs_is_never_read_back(assets, tmp_path, where):  # noqa: F811
  d = tmp_path / 'in'
  names = write_images(d, 2)
  if where == 'inside':
    out = d / 'results'
  else:  # the output folder reached through a symlink inside the input tree
    out = tmp_path / 'out'
    out.mkdir()
    (d / 'results').symlink_to(out)
  cfg = make_config(assets, d, out, method='mganprior', iterations=1)
  for _ in range(2):  # the rerun lists the same inputs: results/img000.png is not a new image
    s = job.run(cfg)
    assert (s['exit_code'], s['total'], s['ok']) == (0, 2, 2)
  assert sorted(r['name'] for r in manifest(out)) == names
  glob_cfg = make_config(assets, f'{d}/**/*.png', out, method='mganprior', iterations=1)
  assert job.run(glob_cfg)['total'] == 2


def test_nothing_is_written_when_validation_fails(assets, tmp_path):  # noqa: F811
  d = tmp_path / 'in'
  write_images(d, 1)
  cases = {  # what goes wrong -> (input spec, overrides, the flag the one-line message names)
    'listing': (tmp_path / 'missing', {}, "--images='"),
    'devices': (d, dict(num_devices=99), 'num_devices=99'),
    'generator': (d, dict(generator=str(tmp_path / 'nogen')), "--generator='"),
  }
  for what, (spec, overrides, flag) in cases.items():
    out = tmp_path / 'new' / what / 'out'
    cfg = make_config(assets, spec, out, method='mganprior', iterations=1, **overrides)
    with pytest.raises(config.ConfigError, match=flag):
      job.run(cfg)
    assert job.main(cfg) == exit_codes.USAGE, what
    assert not (tmp_path / 'new').exists(), what  # not even the parents of the output folder
