"""Face detection and landmarks for alignment (the ``align`` extra: ``pip install 'pmsfc-jax[align]'``).

dlib (Boost licence; the ``dlib-bin`` wheels, or ``pip install dlib`` to build it) finds faces with its
HOG frontal-face detector (built into dlib, no model file) and places 5 landmarks (eye corners, nose
base) with its 5-point shape predictor, ``shape_predictor_5_face_landmarks.dat`` (Davis King, CC0; the
copy inside the ``face-recognition-models`` package, found by its package path: nothing is downloaded,
and the package's own module, which needs ``pkg_resources``, is never imported). docs/alignment.md says
why these and not the alternatives.

* Large photos are searched at most ``DETECT_SIDE`` pixels on their long side (landmarks are placed on
  the full photo); when nothing is found the search is repeated at twice that scale (small faces).
* **Several faces**: detections scoring under half the best one are dropped (on the moved astronaut of
  the tests, a false detection as large as the face scored 0.12 against 1.16), then the face with the
  largest box is aligned; the record counts the faces kept (``faces``).
* **No face**: :class:`images.ImageDecodeError` naming the file and the reason, so a batch job records it
  and goes on.

:func:`load_aligned` is the batch job's decoding step with ``task.align='face'``; the geometry is
``alignment.py``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import threading
from typing import Any, Optional

import numpy as np
from PIL import Image

from pmsfc_jax.io import alignment
from pmsfc_jax.io import images

DETECT_SIDE = 1024
WEAK = 0.5  # detections scoring under this fraction of the best one are dropped
PREDICTOR = 'shape_predictor_5_face_landmarks.dat'
INSTALL = "pip install 'pmsfc-jax[align]'"
_LOCK = threading.Lock()  # dlib's models are shared by the decoding threads


def missing() -> Optional[str]:
  """Why face alignment cannot run here (the packages it needs, with the command), or None."""
  absent = [m for m in ('dlib', 'face_recognition_models') if importlib.util.find_spec(m) is None]
  if absent:
    return f'face alignment needs {" and ".join(absent)}: {INSTALL} (docs/alignment.md)'
  return None


def predictor_path() -> str:
  """The 5-point predictor file inside the ``face-recognition-models`` package."""
  spec = importlib.util.find_spec('face_recognition_models')
  if spec is None or not spec.submodule_search_locations:
    raise ValueError(missing() or 'face_recognition_models is not installed')
  path = os.path.join(list(spec.submodule_search_locations)[0], 'models', PREDICTOR)
  if not os.path.isfile(path):
    raise ValueError(f'{path} is missing: reinstall face-recognition-models ({INSTALL})')
  return path


@functools.lru_cache(maxsize=1)
def model_digest() -> str:
  """SHA-256 of the predictor file (fingerprinted with the results it shapes)."""
  with open(predictor_path(), 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


@functools.lru_cache(maxsize=1)
def _models() -> tuple[Any, Any]:
  import dlib  # pylint: disable=g-import-not-at-top  (optional extra)

  return dlib.get_frontal_face_detector(), dlib.shape_predictor(predictor_path()), dlib.rectangle


def detect(rgb: np.ndarray) -> list[dict]:
  """Faces of a uint8 (H, W, 3) photo, largest first: ``box`` (l, t, r, b), ``score``, ``landmarks``
  (5, 2; x, y in the module's continuous coordinates)."""
  detector, predictor, rectangle = _models()
  rgb = np.ascontiguousarray(rgb, np.uint8)
  h, w = rgb.shape[:2]
  scale = min(1.0, DETECT_SIDE / max(h, w))
  small = rgb
  if scale < 1:
    small = np.asarray(Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale)))))
  found = []
  with _LOCK:
    for upsample in (0, 1):
      rects, scores, _ = detector.run(small, upsample, 0.0)
      if len(rects):
        break
    for rect, score in zip(rects, scores):
      box = [rect.left() / scale, rect.top() / scale, rect.right() / scale, rect.bottom() / scale]
      full = rectangle(*(int(round(v)) for v in box))
      shape = predictor(rgb, full)
      five = np.array([[p.x + 0.5, p.y + 0.5] for p in shape.parts()], np.float64)
      found.append({'box': [int(round(v)) for v in box], 'score': float(score), 'landmarks': five})
  best = max((f['score'] for f in found), default=0.0)
  found = [f for f in found if f['score'] >= best * WEAK]  # weak detections: false positives, mostly
  return sorted(found, key=lambda f: -(f['box'][2] - f['box'][0]) * (f['box'][3] - f['box'][1]))


def align(rgb: np.ndarray, template: str, size: int, source: Any = '<array>') -> tuple[np.ndarray, dict]:
  """(uint8 (size, size, 3) aligned face, its record) of the largest face of ``rgb``; no face:
  ``images.ImageDecodeError``."""
  found = detect(rgb)
  if not found:
    raise images.ImageDecodeError(source, 'no face found (face alignment, task.align=face)')
  face = found[0]
  points = alignment.eyes_and_mouth(face['landmarks'])
  m = alignment.matrix(template, points, size)
  rec = alignment.record(template, size, m, face['landmarks'], points, face['box'], len(found), source)
  return alignment.warp(rgb, m, size), rec


def load_aligned(path, size: int, template: str, max_bytes: Optional[int] = None) -> tuple[np.ndarray, dict]:
  """Reads a photo (``images.read_bytes`` / ``decode_pil``: bounds, EXIF, alpha on white) -> (float32
  (size, size, 3) in [-1, 1], alignment record)."""
  pil = images.decode_pil(images.read_bytes(path, max_bytes), path)
  arr, rec = align(np.asarray(pil), template, size, os.fspath(path))
  rec['source_size'] = list(pil.size)
  return images.to_float(arr), rec
