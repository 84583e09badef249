"""Face alignment (io/alignment.py, io/faces.py, jobs/align.py, jobs/paste.py) on scikit-image's
public-domain astronaut and copies of it moved by known similarities.

The geometry tests need nothing more; the detector tests need the ``align`` extra (dlib, the CC0 5-point
model), which ``.ci/run`` installs: they skip naming the install command elsewhere, and fail under CI.
"""

import json
import os

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata
from skimage import transform as sktransform

from launch import align as align_cli
from launch import paste as paste_cli
from pmsfc_jax.core import config
from pmsfc_jax.io import alignment
from pmsfc_jax.io import faces
from pmsfc_jax.io import images
from pmsfc_jax.jobs import paste
from pmsfc_jax.jobs.invert import fingerprint
from pmsfc_jax.jobs.invert import job
from pmsfc_jax.jobs.invert import manifest
from tests import cli_util
from tests import test_invert_job as tij
from tests.test_invert_job import assets  # noqa: F401

# (degrees, scale, shift x, shift y) of the moved copies: rotation, scale and offset together.
MOVES = [(0.0, 1.0, 40.0, -25.0), (18.0, 1.0, 0.0, 0.0), (-12.0, 0.7, -30.0, 20.0)]


@pytest.fixture(scope='module')
def dlib_models():
  why = faces.missing()
  if why:
    if os.environ.get('CI'):
      pytest.fail(f'CI installs the align extra: {why}')
    pytest.skip(why)


def _moved(
  img: np.ndarray, degrees: float, scale: float, dx: float, dy: float
) -> tuple[np.ndarray, np.ndarray]:
  """``img`` moved by a similarity about its centre (edge coordinates) -> (moved image, 3x3 matrix)."""
  h, w = img.shape[:2]
  c = np.array([[1, 0, w / 2], [0, 1, h / 2], [0, 0, 1.0]])
  a = np.deg2rad(degrees)
  rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) * [[scale], [scale], [1]]
  t = np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1.0]]) @ c @ rot @ np.linalg.inv(c)
  centre = (
    np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
    @ t
    @ np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
  )
  moved = sktransform.warp(img, np.linalg.inv(centre), output_shape=(h, w), order=3, mode='edge')
  return np.clip(np.rint(moved * 255), 0, 255).astype(np.uint8), t


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
  return float(10 * np.log10(255.0**2 / mse))


def _apply(m: np.ndarray, pts) -> np.ndarray:
  pts = np.asarray(pts, np.float64)
  return (np.asarray(m) @ np.c_[pts, np.ones(len(pts))].T).T[:, :2]


# ------------------------------------------------------------------------------------------------
# Geometry (no detector).


def test_mean_face_mouth_and_the_celebahq_square():
  pts = alignment.eyes_and_mouth(alignment.DLIB_MEAN_FIVE * 100)
  np.testing.assert_allclose(pts[2], alignment.DLIB_MEAN_MOUTH * 100, atol=1e-6)
  # An upright face: eyes 40 apart, mouth 40 below their midpoint -> the recipe's square, axis-aligned,
  # side 2 * max(2 * 40, 1.8 * 40) = 160, centred 4 px below the eyes.
  quad = alignment.celebahq_quad([[80, 100], [120, 100], [100, 140]])
  np.testing.assert_allclose(quad, [[20, 24], [20, 184], [180, 184], [180, 24]], atol=1e-9)
  m = alignment.matrix('celebahq', [[80, 100], [120, 100], [100, 140]], 64)
  np.testing.assert_allclose(_apply(m, quad), [[0, 0], [0, 64], [64, 64], [64, 0]], atol=1e-9)
  np.testing.assert_allclose(alignment.quad_of(m, 64), quad, atol=1e-9)


@pytest.mark.parametrize('template', alignment.TEMPLATES)
def test_matrix_follows_a_moved_face(template):
  """Moving the landmarks by a similarity T moves the alignment by T: M(T p) T == M(p)."""
  pts = np.array([[200.0, 110.0], [250.0, 104.0], [228.0, 160.0]])
  for move in MOVES:
    t = _moved(np.zeros((4, 4, 3), np.uint8), *move)[1]
    np.testing.assert_allclose(
      alignment.matrix(template, _apply(t, pts), 128) @ t, alignment.matrix(template, pts, 128), atol=1e-9
    )


def test_paste_of_the_crop_restores_the_photo_and_leaves_the_rest():
  photo = skdata.astronaut()
  m = alignment.matrix('celebahq', [[204.0, 102.5], [246.5, 105.0], [223.3, 148.4]], 192)
  crop = alignment.warp(photo, m, 192)
  pasted = alignment.paste(photo, crop, m, 192, feather=0.1)
  mask = alignment.feather_mask(192, 0.1)
  core = _inverse_region(photo.shape, m, 192, mask)
  assert _psnr(photo[core], pasted[core]) > 30.0
  q = alignment.quad_of(m, 192)
  outside = np.ones(photo.shape[:2], bool)
  outside[
    int(q[:, 1].min()) - 3 : int(q[:, 1].max()) + 4, int(q[:, 0].min()) - 3 : int(q[:, 0].max()) + 4
  ] = False
  np.testing.assert_array_equal(pasted[outside], photo[outside])


def _inverse_region(shape, m, size, mask) -> np.ndarray:
  """Photo pixels whose centre maps inside the crop where ``mask`` is 1 (the fully pasted region)."""
  yy, xx = np.mgrid[: shape[0], : shape[1]]
  uv = _apply(m, np.c_[xx.ravel() + 0.5, yy.ravel() + 0.5])
  u, v = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
  ok = (u >= 0) & (u < size) & (v >= 0) & (v < size)
  full = np.zeros(len(uv), bool)
  full[ok] = mask[v[ok], u[ok]] >= 1.0
  return full.reshape(shape[:2])


# ------------------------------------------------------------------------------------------------
# Detector and landmarks (the align extra).


@pytest.mark.parametrize('template', alignment.TEMPLATES)
def test_aligned_landmarks_land_on_the_template(dlib_models, template):
  size = 256
  crop, rec = faces.align(skdata.astronaut(), template, size)
  again = faces.detect(crop)
  assert len(again) == 1 and rec['faces'] == 1
  found = alignment.eyes_and_mouth(again[0]['landmarks'])
  expected = _apply(rec['matrix'], rec['eyes_mouth'])  # where the template put them
  assert np.abs(found - expected).max() < 3.0, (found, expected)
  if template == 'celeba':  # a fitted template: the three points themselves, up to the fit's residual
    assert np.abs(found - alignment.CELEBA_POINTS * size).max() < 0.03 * size
  else:  # the recipe: eyes level and centred, mouth below them
    assert abs(found[0, 1] - found[1, 1]) < 3 and abs((found[0, 0] + found[1, 0]) / 2 - size / 2) < 3


@pytest.mark.parametrize('move', MOVES, ids=lambda m: 'rot%g_scale%g_shift%g,%g' % m)
def test_known_move_is_undone(dlib_models, move):
  photo = skdata.astronaut()
  moved, t = _moved(photo, *move)
  base, rec = faces.align(photo, 'celebahq', 128)
  crop, rec_moved = faces.align(moved, 'celebahq', 128)
  # The recorded transform of the copy, composed with the move, is the original's (within 2 px at 128).
  # The copy's recorded transform, composed with the move, is the original's: the original's square
  # lands on the crop's corners within 3 px at 128 (dlib places landmarks on whole pixels).
  err = np.abs(
    _apply(np.asarray(rec_moved['matrix']) @ t, rec['quad']) - [[0, 0], [0, 128], [128, 128], [128, 0]]
  )
  assert err.max() < 3.0, err
  assert _psnr(base, crop) > 24.0


def test_no_face_is_an_error_naming_the_file(dlib_models, tmp_path):
  blank = tmp_path / 'wall.png'
  Image.fromarray(np.tile(np.linspace(0, 255, 300, dtype=np.uint8)[None, :, None], (200, 1, 3))).save(blank)
  with pytest.raises(images.ImageDecodeError, match=r'wall\.png: no face found'):
    faces.load_aligned(blank, 64, 'celebahq')


def test_align_and_paste_commands(dlib_models, tmp_path):
  """launch.align: a face and a faceless photo (exit 1, one error line); launch.paste of the unmodified
  crop reproduces the photo inside the face region; an RGBA photo is read with its alpha on white."""
  src = tmp_path / 'photos'
  src.mkdir()
  Image.fromarray(skdata.astronaut()).save(src / 'astronaut.png')
  rgba = np.dstack([skdata.astronaut(), np.full((512, 512), 255, np.uint8)])
  Image.fromarray(rgba, 'RGBA').save(src / 'astronaut_rgba.png')
  Image.fromarray(np.full((100, 120, 3), 128, np.uint8)).save(src / 'wall.jpg')
  out = tmp_path / 'aligned'
  with pytest.raises(SystemExit) as e:
    cli_util.run_cli_in_process(
      lambda argv: (_ for _ in ()).throw(SystemExit(align_cli.main(argv))),
      [f'--images={src}', f'--output_dir={out}', '--resolution=192'],
    )
  assert e.value.code == 1
  lines = [json.loads(x) for x in (out / 'alignment.jsonl').read_text().splitlines()]
  assert [(x['name'], x['status']) for x in lines] == [
    ('astronaut.png', 'ok'),
    ('astronaut_rgba.png', 'ok'),
    ('wall.jpg', 'error'),
  ]
  assert 'no face found' in lines[2]['error']
  rec = json.loads((out / 'astronaut.json').read_text())
  assert rec['source_size'] == [512, 512] and rec['template'] == 'celebahq'
  cli_util.run_cli_in_process(
    paste_cli.main, [f'--alignment={out / "astronaut.json"}', f'--output={tmp_path / "p.png"}']
  )
  pasted, photo = np.asarray(Image.open(tmp_path / 'p.png')), skdata.astronaut()
  core = _inverse_region(photo.shape, np.asarray(rec['matrix']), 192, alignment.feather_mask(192, 0.1))
  assert core.sum() > 10000
  assert _psnr(photo[core], pasted[core]) > 30.0


def test_fingerprint_keeps_old_folders_and_records_the_template():
  base = config.InvertConfig()
  settings = fingerprint.without_later_settings(config.result_settings(base))
  assert 'align' not in settings['task'] and 'align_template' not in settings['task']
  aligned = config.override(base, {'task.align': 'face', 'model.generator': 'demo'})
  assert config.align_template(aligned) == 'celeba'
  assert config.align_template(config.override(aligned, {'model.generator': '/ckpt/pggan'})) == 'celebahq'
  assert 'crop' not in config.result_settings(aligned)['task']
  with pytest.raises(config.ConfigError, match='task.align'):
    config.override(base, {'task.align': 'faces'})


def test_batch_job_aligns_records_and_pastes_back(dlib_models, assets, tmp_path):  # noqa: F811
  """launch.invert with task.align=face: a faceless photo is that image's manifest error (the job goes
  on), the aligned result's .npz carries its record, and launch.paste puts the result into the photo."""
  src = tmp_path / 'photos'
  src.mkdir()
  Image.fromarray(skdata.astronaut()).save(src / 'astronaut.png')
  Image.fromarray(_moved(skdata.astronaut(), *MOVES[2])[0]).save(src / 'moved.png')
  Image.fromarray(np.full((80, 90, 3), 200, np.uint8)).save(src / 'wall.png')
  cfg = tij.make_config(assets, src, tmp_path / 'out', align='face', iterations=2, checkpoint_every=0)
  summary = job.run(config.override(cfg, {'task.align_template': 'celebahq'}))
  assert (summary['ok'], summary['failed'], summary['exit_code']) == (2, 1, 1)
  lines = {r['name']: r for r in manifest.read_jsonl(tmp_path / 'out' / 'manifest.jsonl')[0]}
  assert 'wall.png: no face found' in lines['wall.png']['error']
  assert lines['astronaut.png']['faces'] == 1 and lines['astronaut.png']['steps'] == 2
  rec = paste.load_record(str(tmp_path / 'out' / 'astronaut.npz'))
  assert rec['size'] == 16 and rec['template'] == 'celebahq' and rec['source'].endswith('astronaut.png')
  assert (tmp_path / 'out' / 'inputs' / 'astronaut.png').exists()
  pasted = paste.run(str(tmp_path / 'out' / 'astronaut.npz'), str(tmp_path / 'pasted.png'))
  photo = skdata.astronaut()
  assert pasted.shape == photo.shape
  changed = np.any(pasted != photo, axis=-1)
  ys, xs = np.nonzero(changed)  # only inside the face's square
  q = np.asarray(rec['quad'])
  assert xs.min() >= q[:, 0].min() - 3 and xs.max() <= q[:, 0].max() + 3 and changed.sum() > 1000
