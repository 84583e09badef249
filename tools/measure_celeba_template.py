r"""Measures alignment template ``celeba`` (``pmsfc_jax/io/alignment.py: CELEBA_POINTS``): where the eyes
and mouth of aligned CelebA faces (``img_align_celeba``, the shipped demo generator's training framing)
sit in the centre square that ``io/images.py`` crops, as found by the alignment's own detector.

  python -m tools.measure_celeba_template --faces=../shared/data/celeba_small --num=500

Each face is enlarged 4x (bicubic: the HOG detector needs faces of about 80 pixels), its 5 landmarks
placed, eyes and mouth derived (``alignment.eyes_and_mouth``) and expressed in the unit square of the
face's centre square crop. Prints the detection rate and the median and interquartile range of each
coordinate; CELEBA_POINTS holds the medians (left and right eye averaged to one height and mirrored
about the centre, as CelebA's alignment is symmetric).
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
from absl import app
from absl import flags
from PIL import Image

from pmsfc_jax.io import alignment
from pmsfc_jax.io import faces

_FACES = flags.DEFINE_string(
  'faces',
  os.path.join(
    os.environ.get('PMSFC_SHARED', str(pathlib.Path(__file__).resolve().parents[2] / 'shared')),
    'data',
    'celeba_small',
  ),
  'Folder of aligned CelebA faces (000001.jpg ...).',
)
_NUM = flags.DEFINE_integer('num', 500, 'Faces to measure (the first N by name).')
UP = 4


def main(argv):
  del argv
  paths = sorted(pathlib.Path(_FACES.value).glob('*.jpg'))[: _NUM.value]
  found = []
  for p in paths:
    with Image.open(p) as im:
      rgb = im.convert('RGB')
    w, h = rgb.size
    big = np.asarray(rgb.resize((w * UP, h * UP), Image.BICUBIC))
    detected = faces.detect(big)
    if not detected:
      continue
    pts = alignment.eyes_and_mouth(detected[0]['landmarks'] / UP)
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2  # images.square(crop='center')
    found.append((pts - [left, top]) / s)
  pts = np.stack(found)
  print(f'{len(found)} of {len(paths)} faces detected in {_FACES.value}')
  for i, name in enumerate(('left eye', 'right eye', 'mouth')):
    q = np.percentile(pts[:, i], [25, 50, 75], axis=0)
    print(
      f'{name:9s} x {q[1, 0]:.4f} (IQR {q[0, 0]:.4f}-{q[2, 0]:.4f})  y {q[1, 1]:.4f} (IQR {q[0, 1]:.4f}-{q[2, 1]:.4f})'
    )
  med = np.median(pts, axis=0)
  half = (med[1, 0] - med[0, 0]) / 2
  eye_y = (med[0, 1] + med[1, 1]) / 2
  sym = np.array([[0.5 - half, eye_y], [0.5 + half, eye_y], [0.5, med[2, 1]]])
  print('CELEBA_POINTS = np.array(' + np.array2string(np.round(sym, 4), separator=', ') + ')')


if __name__ == '__main__':
  app.run(main)
