r"""Builds the golden sets ``tests/data/golden/{celebahq,bedroom}/`` from the official (z, image) pairs.

  python tools/make_golden.py --generated=DIR [--out=tests/data/golden] [--celebahq=8,11,14,23] [--bedroom=all]
  python tools/make_golden.py --generated=DIR --sensitivity    # the threshold table of PROVENANCE.md

``DIR/<model>/`` holds ``image_<N>_z.npy`` ((1, 512) float32) and ``image_<N>.png``: the latents pickled
in guanyuelee/PmSFC's ``bin/pggan/<model>/image_<N>.pkl`` (as .npy) and the PNGs beside them, the images
the official PGGANs generate from them (the project's shared data folder has them as
``data/official/generated/``). celebahq: the 1024x1024 PNGs are downsized 4x (exact 4x4 area average,
round half up; ``pmsfc_jax/evaluation/golden.py``) to 256x256; bedroom: the 256x256 PNGs are copied byte
for byte. ``z.npy`` stacks the latents unchanged, in the order of ``golden.json``'s ``names``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import pathlib
import re
import shutil

import numpy as np
import scipy.ndimage
from PIL import Image

from pmsfc_jax.evaluation import golden
from pmsfc_jax.io import files
from pmsfc_jax.io import images

REPO = pathlib.Path(__file__).resolve().parents[1]
MODELS = {  # model: (generator, full resolution, downsample factor)
  'celebahq': ('karras2018iclr-celebahq-1024x1024', 1024, 4),
  'bedroom': ('karras2018iclr-lsun-bedroom-256x256', 256, 1),
}
OFFICIAL = 'https://github.com/guanyuelee/PmSFC (commit f26cbb46ba86ba0ee7c2fced982ac07307f3108e)'


def sha(b: bytes) -> str:
  return hashlib.sha256(b).hexdigest()


def png_bytes(u8: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(u8, 'RGB').save(buf, format='PNG', optimize=True)
  return buf.getvalue()


def build(model: str, src: pathlib.Path, out: pathlib.Path, which: str) -> dict:
  gen, res, f = MODELS[model]
  found = (re.fullmatch(r'image_(\d+)_z\.npy', p.name) for p in src.glob('image_*_z.npy'))
  available = sorted(int(m.group(1)) for m in found if m)
  ids = available if which == 'all' else [int(x) for x in which.split(',')]
  missing = sorted(set(ids) - set(available))
  if missing or not ids:
    raise FileNotFoundError(f'{src}: no official pair for {missing or "any image"}')
  if out.exists():
    shutil.rmtree(out)
  out.mkdir(parents=True)
  zs, names = [], []
  for n in ids:
    zf, pf = src / f'image_{n}_z.npy', src / f'image_{n}.png'
    z = files.load_npy(zf, 'latent')
    if z.shape != (1, 512) or z.dtype != np.float32:
      raise ValueError(f'{zf}: expected (1, 512) float32, got {z.shape} {z.dtype}')
    zs.append(z[0])
    raw = pf.read_bytes()
    with Image.open(io.BytesIO(raw)) as im:
      if im.mode != 'RGB' or im.size != (res, res):
        raise ValueError(f'{pf}: expected a {res}x{res} RGB PNG, got {im.mode} {im.size}')
      shipped = raw if f == 1 else png_bytes(golden.box_downsize(np.asarray(im), f))
    (out / pf.name).write_bytes(shipped)
    names.append(
      {
        'name': f'image_{n}',
        'png': pf.name,
        'original_png': f'bin/pggan/{model}/image_{n}.png',
        'original_png_sha256': sha(raw),
        'original_z': f'bin/pggan/{model}/image_{n}.pkl',
        'original_z_npy_sha256': sha(zf.read_bytes()),
        'png_sha256': sha(shipped),
      }
    )
  z_bytes = files.npy_bytes(np.stack(zs).astype(np.float32))
  (out / 'z.npy').write_bytes(z_bytes)
  down = f'then the {f}x{f} area average rounded half up, (block sum + {f * f // 2}) // {f * f}'
  meta = {
    'format_version': 1,
    'model': model,
    'generator': gen,
    'z_dim': 512,
    'source_resolution': res,
    'resolution': res // f,
    'downsample_factor': f,
    'pipeline': 'uint8 = clip(rint((x + 1) * 127.5), 0, 255) of the [-1, 1] generator output (the official '
    'PNGs), ' + (down if f > 1 else 'no downsizing (byte-identical copies of the official PNGs)'),
    'compare': 'pmsfc_jax.evaluation.golden.golden_psnr: the same pipeline on the full-resolution generated '
    'image, PSNR over all pixels and channels',
    'min_psnr_db': golden.MIN_PSNR_DB,
    'z_file': 'z.npy',
    'z_sha256': sha(z_bytes),
    'names': names,
    'source': f'{OFFICIAL} bin/pggan/{model}/image_N.pkl + image_N.png',
    'licence': 'Apache-2.0, the PmSFC authors (pmsfc_jax/assets/LICENSE-PmSFC.txt)',
  }
  (out / golden.GOLDEN_JSON).write_text(json.dumps(meta, indent=2) + '\n')
  return meta


def sensitivity(generated: pathlib.Path, folder: pathlib.Path) -> None:
  """Prints PSNR at full resolution vs downsized for typical port errors applied to the official
  1024x1024 CelebA-HQ images of the golden set (the table in tests/data/golden/PROVENANCE.md)."""
  meta = golden.load_meta(folder)
  full = np.stack([np.asarray(Image.open(generated / e['png']).convert('RGB')) for e in meta['names']])
  x = full.astype(np.float64) / 127.5 - 1
  rng = np.random.default_rng(0)
  noise = lambda s: lambda y: y + rng.normal(scale=s / 127.5, size=y.shape)  # s in uint8 levels
  cases = {
    'float noise 1e-3 (rounding flips only)': noise(0.1275),
    'white noise sigma 2 levels': noise(2.0),
    'white noise sigma 4.5 levels': noise(4.5),
    'white noise sigma 8 levels': noise(8.0),
    'constant offset +0.02 (2.55 levels)': lambda y: y + 0.02,
    'constant offset +0.1 (12.75 levels)': lambda y: y + 0.1,
    'contrast x1.05': lambda y: y * 1.05,
    'gaussian blur sigma 0.5 px': lambda y: scipy.ndimage.gaussian_filter(y, (0, 0.5, 0.5, 0)),
    'gaussian blur sigma 1 px': lambda y: scipy.ndimage.gaussian_filter(y, (0, 1, 1, 0)),
    'shift by 1 px': lambda y: np.roll(y, 1, axis=2),
    'shift by 2 px': lambda y: np.roll(y, 2, axis=2),
    'RGB -> BGR': lambda y: y[..., ::-1],
    '2x nearest re-upsampling of a 512 image': lambda y: np.repeat(np.repeat(y[:, ::2, ::2], 2, 1), 2, 2),
  }
  print('| perturbation of the official 1024 images | full-res PSNR (dB) | 4x4-downsized PSNR (dB) |')
  print('|---|---|---|')
  for name, fn in cases.items():
    y = fn(x.copy()).astype(np.float32)
    fullp = [golden.psnr_uint8(a, b) for a, b in zip(images.to_uint8(y), full)]
    down = golden.golden_psnr(y, folder)
    print(f'| {name} | {min(fullp):.1f} .. {max(fullp):.1f} | {min(down):.1f} .. {max(down):.1f} |')


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--generated', required=True, help='folder with <model>/image_N_z.npy + image_N.png')
  p.add_argument('--out', default=str(REPO / 'tests' / 'data' / 'golden'))
  p.add_argument('--celebahq', default='8,11,14,23')
  p.add_argument('--bedroom', default='all')
  p.add_argument('--sensitivity', action='store_true', help='print the threshold table (celebahq) and stop')
  a = p.parse_args(argv)
  if a.sensitivity:
    sensitivity(pathlib.Path(a.generated) / 'celebahq', pathlib.Path(a.out) / 'celebahq')
    return
  for model in MODELS:
    out = pathlib.Path(a.out) / model
    meta = build(model, pathlib.Path(a.generated) / model, out, getattr(a, model))
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f'{model}: {len(meta["names"])} pairs at {meta["resolution"]}x{meta["resolution"]}, {size} bytes')


if __name__ == '__main__':
  main()
