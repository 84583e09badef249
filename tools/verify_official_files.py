r"""Checks the shipped official data against a checkout of the PmSFC repository.

  git clone https://github.com/guanyuelee/PmSFC && git -C PmSFC checkout f26cbb46
  python tools/verify_official_files.py --pmsfc=PmSFC

Verifies, without trusting any pickle (numpy-only restricted unpickler, ``pmsfc_jax/io/pretrained.py``):

* every golden pair in ``tests/data/golden/<model>/``: the original PNG's sha256 recorded in golden.json
  is the repository file's, and the latent row of ``z.npy`` equals the array pickled in
  ``bin/pggan/<model>/image_<N>.pkl``;
* the shipped subspaces ``pmsfc_jax/assets/<model>/subspaces/``: the recorded sha256 of the matrix
  ``.npy`` is that of the array pickled in ``bin/pggan/<model>/matrix/layer3/value50.pkl``, saved with
  ``numpy.save``.

Prints one line per checked file; exits with status 1 naming the first mismatch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import sys

import numpy as np

from pmsfc_jax.evaluation import golden
from pmsfc_jax.io import files
from pmsfc_jax.io import pretrained

REPO = pathlib.Path(__file__).resolve().parents[1]


def _pickled_array(path: pathlib.Path) -> np.ndarray:
  return np.asarray(pretrained.loads_numpy_pickle(path.read_bytes(), str(path)))


def verify(pmsfc: pathlib.Path, golden_root: pathlib.Path, assets: pathlib.Path) -> list[str]:
  """Lines describing each check; raises ValueError at the first mismatch."""
  out = []
  for folder in sorted(p for p in golden_root.iterdir() if (p / golden.GOLDEN_JSON).exists()):
    z = golden.load_latents(folder)
    for i, entry in enumerate(golden.load_meta(folder)['names']):
      png = pmsfc / entry['original_png']
      if hashlib.sha256(png.read_bytes()).hexdigest() != entry['original_png_sha256']:
        raise ValueError(f'{png}: sha256 differs from {folder / golden.GOLDEN_JSON}')
      pkl = pmsfc / entry['original_z']
      if not np.array_equal(_pickled_array(pkl).reshape(-1), z[i]):
        raise ValueError(f'{pkl}: latent differs from row {i} of {folder / "z.npy"}')
      out.append(f'ok {png.relative_to(pmsfc)} + {pkl.name} = {folder.name}/{entry["png"]} source, z row {i}')
  for info_path in sorted(assets.glob('*/subspaces/subspaces.json')):
    prov = json.loads(info_path.read_text()).get('provenance')
    if not prov:
      continue
    pkl = pmsfc / prov['official_file']
    digest = hashlib.sha256(files.npy_bytes(_pickled_array(pkl))).hexdigest()
    if digest != prov['matrix_npy_sha256']:
      raise ValueError(f'{pkl}: the array saved as .npy has sha256 {digest}, {info_path} records another')
    out.append(f'ok {pkl.relative_to(pmsfc)} = the matrix of {info_path.parent.relative_to(assets)}')
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--pmsfc', required=True, help='a checkout of guanyuelee/PmSFC')
  p.add_argument('--golden', default=str(REPO / 'tests' / 'data' / 'golden'))
  p.add_argument('--assets', default=str(REPO / 'pmsfc_jax' / 'assets'))
  a = p.parse_args(argv)
  try:
    lines = verify(pathlib.Path(a.pmsfc), pathlib.Path(a.golden), pathlib.Path(a.assets))
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f'MISMATCH: {e}')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
