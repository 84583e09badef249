"""Face alignment geometry: eyes and mouth -> an oriented square -> resampled crop, and back (paste).

Implements the oriented-square recipe of CelebA-HQ (Karras et al., ICLR 2018, ``dataset_tool.py
create_celebahq``) that FFHQ's ``align_images.py`` / ``recreate_aligned_images`` reuse: from the eye
centres ``e_l``, ``e_r`` and the mouth centre ``m``,

    e = (e_l + e_r) / 2,  ee = e_r - e_l,  em = m - e
    x = ee - rot90(em);  x = x / |x| * max(2 |ee|, 1.8 |em|);  y = rot90(x);  c = e + 0.1 em

and the square with corners ``c - x - y`` (top left), ``c - x + y``, ``c + x + y``, ``c + x - y`` is
resampled to ``size`` x ``size`` (template ``celebahq``). Template ``celeba`` frames faces the way the
aligned CelebA release (``img_align_celeba``) does, centre-square-cropped as ``io/images.py`` crops it
(what the shipped ``demo`` generator was trained on): the similarity that puts the eyes and mouth at
``CELEBA_POINTS`` (measured by ``tools/measure_celeba_template.py``; least squares, Umeyama's method via
scikit-image).

Coordinates are continuous with pixel (row i, column j) covering ``[j, j+1] x [i, i+1]`` (the CelebA-HQ
script's ``+ 0.5`` on landmark indices); points are (x, y). The transform recorded beside each result,
``matrix``, is the 3x3 similarity from source-photo coordinates to aligned-crop coordinates at the
record's ``size``; :func:`paste` inverts it to put a (possibly edited or re-generated) face back into the
photo through a feathered mask.

Resampling follows the FFHQ script's order: an integer box shrink while the square is more than 4x the
output, then a bicubic affine warp (reflected borders where the square leaves the photo, as FFHQ pads by
reflection; FFHQ's extra blur of the padding is left out) at up to 3x the output size, then Lanczos down
(``images.resize``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from PIL import Image
from skimage import transform as sktransform

from pmsfc_jax.io import images

TEMPLATES = ('celebahq', 'celeba')
# dlib's 5-point predictor's mean face (``get_face_chip_details``, dlib/image_transforms/interpolation.h),
# unit face square: subject's left eye outer and inner corner, right eye outer and inner, nose base.
DLIB_MEAN_FIVE = np.array(
  [
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
  ]
)
# The mouth centre of dlib's 68-point mean face in the same square (mean of its points 48 and 54, the
# mouth corners; same file): the 5-point model has no mouth, so it is placed by the similarity that best
# fits the five points to DLIB_MEAN_FIVE (:func:`eyes_and_mouth`).
DLIB_MEAN_MOUTH = np.array([0.4901265, 0.780233])
# Template 'celeba': eyes (image left, image right) and mouth centre in the unit square of an aligned
# CelebA face's centre square (tools/measure_celeba_template.py prints these).
CELEBA_POINTS = np.array([[0.3919, 0.5249], [0.6081, 0.5249], [0.5, 0.7522]])


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """The least-squares similarity (3x3) taking ``src`` points to ``dst`` (Umeyama, scikit-image)."""
  m = np.asarray(sktransform.estimate_transform('similarity', src, dst).params, np.float64)
  if not np.all(np.isfinite(m)) or scale_of(m) <= 0:
    raise ValueError('degenerate landmarks')
  return m


def eyes_and_mouth(five: np.ndarray) -> np.ndarray:
  """(3, 2): image-left eye centre, image-right eye centre, mouth centre from dlib's 5 landmarks."""
  five = np.asarray(five, np.float64)
  mouth = (_similarity(DLIB_MEAN_FIVE, five) @ np.append(DLIB_MEAN_MOUTH, 1.0))[:2]
  return np.stack([(five[2] + five[3]) / 2, (five[0] + five[1]) / 2, mouth])


def _square_to(quad: np.ndarray, size: int) -> np.ndarray:
  """The similarity taking the square ``quad`` (top left, bottom left, bottom right, top right) to
  ``[0, size]^2`` (3x3)."""
  ex, ey = quad[3] - quad[0], quad[1] - quad[0]
  lin = np.stack([ex, ey]) * (size / float(ex @ ex))
  m = np.eye(3)
  m[:2, :2], m[:2, 2] = lin, -lin @ quad[0]
  return m


def celebahq_quad(points: np.ndarray) -> np.ndarray:
  """The CelebA-HQ / FFHQ oriented square (4, 2) of (left eye, right eye, mouth) (module docstring)."""
  eye_l, eye_r, mouth = np.asarray(points, np.float64)
  eye = (eye_l + eye_r) / 2
  ee, em = eye_r - eye_l, mouth - eye
  rot90 = lambda v: np.array([-v[1], v[0]])
  x = ee - rot90(em)
  x = x / np.hypot(*x) * max(np.hypot(*ee) * 2.0, np.hypot(*em) * 1.8)
  y = rot90(x)
  c = eye + em * 0.1
  return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def matrix(template: str, points: np.ndarray, size: int) -> np.ndarray:
  """3x3 similarity, source coordinates -> aligned coordinates in ``[0, size]^2``, of ``template`` for
  the (left eye, right eye, mouth) ``points``."""
  if template == 'celebahq':
    return _square_to(celebahq_quad(points), size)
  if template == 'celeba':
    return _similarity(np.asarray(points, np.float64), CELEBA_POINTS * size)
  raise ValueError(f'unknown alignment template {template!r}; expected one of {", ".join(TEMPLATES)}')


def _shift(dx: float, dy: float) -> np.ndarray:
  return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _scale(s: float) -> np.ndarray:
  return np.diag([s, s, 1.0])


def scale_of(m: np.ndarray) -> float:
  """Aligned pixels per source pixel of a similarity."""
  return math.sqrt(abs(np.linalg.det(np.asarray(m)[:2, :2])))


def quad_of(m: np.ndarray, size: int) -> np.ndarray:
  """The source square (4, 2) that ``m`` maps onto ``[0, size]^2`` (top left, bottom left, ...)."""
  corners = np.array([[0, 0, 1], [0, size, 1], [size, size, 1], [size, 0, 1]], np.float64)
  return (np.linalg.inv(m) @ corners.T).T[:, :2]


def _centre(m: np.ndarray) -> np.ndarray:
  """``m`` (edge coordinates) in pixel-centre coordinates (scikit-image's: pixel (i, j) at (j, i))."""
  return _shift(-0.5, -0.5) @ m @ _shift(0.5, 0.5)


def _box(m: np.ndarray, size: int, shape: Sequence[int], margin: int = 4) -> tuple[int, int, int, int]:
  """(x0, y0, x1, y1): the part of an image of ``shape`` under the square of ``m``, plus a margin."""
  q = quad_of(m, size)
  h, w = shape[:2]
  x0, y0 = (max(0, min(n, int(math.floor(v)) - margin)) for v, n in zip(q.min(0), (w, h)))
  x1, y1 = (max(0, min(n, int(math.ceil(v)) + margin)) for v, n in zip(q.max(0), (w, h)))
  return x0, y0, x1, y1


def warp(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
  """uint8 (H, W, 3) photo -> the uint8 (size, size, 3) crop of the square of ``m`` (module docstring)."""
  image = np.asarray(image)
  per_pixel = 1.0 / scale_of(m)  # source pixels per output pixel
  shrink = int(math.floor(per_pixel / 2)) if per_pixel >= 4 else 1
  x0, y0, x1, y1 = _box(m, size, image.shape, margin=4 * shrink)
  if x1 - x0 < 2 or y1 - y0 < 2:  # the square lies outside the photo: sample the photo's border
    x0, y0, x1, y1 = 0, 0, image.shape[1], image.shape[0]
  m = m @ _shift(x0, y0)
  pil = Image.fromarray(image[y0:y1, x0:x1])
  if shrink > 1:
    pil = pil.reduce(shrink)
    m = m @ _scale(shrink)
  sup = max(1, min(3, int(math.ceil(per_pixel / shrink - 1e-6))))
  big = size * sup
  src = np.asarray(pil).astype(np.float32) / 255.0
  out = sktransform.warp(
    src, np.linalg.inv(_centre(_scale(sup) @ m)), output_shape=(big, big), order=3, mode='reflect'
  )
  out = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
  return np.asarray(images.resize(Image.fromarray(out), size)) if sup > 1 else out


def feather_mask(size: int, feather: float) -> np.ndarray:
  """(size, size) float mask: 1 inside, falling smoothly to 0 over ``feather * size`` pixels at the edges."""
  d = np.minimum(np.arange(size) + 0.5, size - np.arange(size) - 0.5)
  r = np.clip(d / max(feather * size, 1e-6), 0.0, 1.0)
  r = r * r * (3 - 2 * r)  # smoothstep
  return np.outer(r, r)


def paste(photo: np.ndarray, face: np.ndarray, m: np.ndarray, size: int, feather: float = 0.1) -> np.ndarray:
  """``face`` (F, F, 3; float in [-1, 1] or uint8) warped back into ``photo`` (uint8 (H, W, 3)) through
  the inverse of ``m`` (source -> aligned at ``size``; any F: rescaled), blended with
  :func:`feather_mask`; returns the new uint8 photo (pixels outside the square are untouched)."""
  photo = np.asarray(photo)
  face = np.asarray(face)
  face01 = face.astype(np.float32) / 255.0 if face.dtype == np.uint8 else (face.astype(np.float32) + 1) / 2
  f = face.shape[0]
  mf = _scale(f / size) @ np.asarray(m, np.float64)
  x0, y0, x1, y1 = _box(mf, f, photo.shape, margin=2)
  if x1 <= x0 or y1 <= y0:
    return photo.copy()
  inv = _centre(mf @ _shift(x0, y0))  # window pixel centres -> face pixel centres
  shape = (y1 - y0, x1 - x0)
  back = sktransform.warp(np.clip(face01, 0, 1), inv, output_shape=shape, order=3, mode='edge')
  alpha = sktransform.warp(feather_mask(f, feather), inv, output_shape=shape, order=1, mode='constant')
  out = photo.astype(np.float32).copy()
  window = out[y0:y1, x0:x1]
  window[:] = alpha[..., None] * np.clip(back, 0, 1) * 255.0 + (1 - alpha[..., None]) * window
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def record(
  template: str, size: int, m: np.ndarray, five: np.ndarray, points: np.ndarray, box, faces: int, source: Any
) -> dict:
  """The JSON record kept beside an aligned result (``launch.paste`` reads it)."""
  r = lambda a: np.round(np.asarray(a, np.float64), 6).tolist()
  return {
    'version': 1,
    'template': template,
    'size': int(size),
    'matrix': r(m),
    'quad': r(quad_of(m, size)),
    'landmarks': r(five),
    'eyes_mouth': r(points),
    'box': [int(v) for v in box],
    'faces': int(faces),
    'source': str(source),
  }
