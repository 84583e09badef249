"""Face alignment of a folder of photos (``launch.align``): the aligned crops a generator expects, and
the record that puts each one back into its photo (``launch.paste``).

For every input (``io/listing.py``: folder, glob, list file or one image; decoding and hostile-input
bounds of ``io/images.py``) the largest face is found, its landmarks placed and the oriented square of
the template (``io/alignment.py``: ``celebahq`` = the CelebA-HQ / FFHQ recipe, ``celeba`` = aligned CelebA
framing) resampled to ``resolution``; writes ``OUT/<stem>.png`` (the crop), ``OUT/<stem>.json`` (the
alignment record: landmarks, similarity matrix photo -> crop, source path and size, faces found) and
``OUT/alignment.jsonl`` (one line per input: ``status`` ok / error and the error, e.g. ``no face found``).
A bad input or a photo without a face is that input's error; the others go on. The same step runs inside
``launch.invert`` with ``--config.task.align=face``.
"""

from __future__ import annotations

from typing import Optional

from absl import logging
from etils import epath

from pmsfc_jax.core import config
from pmsfc_jax.io import alignment
from pmsfc_jax.io import faces
from pmsfc_jax.io import files
from pmsfc_jax.io import images
from pmsfc_jax.io import listing
from pmsfc_jax.io import progress
from pmsfc_jax.jobs import exit_codes
from pmsfc_jax.jobs.invert import manifest

RECORDS = 'alignment.jsonl'


def _checked(images_spec: str, output_dir: str, resolution: int, template: str) -> list[listing.InputItem]:
  """The inputs, after every check that can fail (one-line ``ConfigError`` naming the flag)."""
  if faces.missing():
    raise config.ConfigError(f'launch.align: {faces.missing()}')
  if template not in alignment.TEMPLATES:
    raise config.ConfigError(f'--template must be one of {", ".join(alignment.TEMPLATES)}, got {template!r}')
  if not resolution or resolution < 8:
    raise config.ConfigError(f'--resolution must be >= 8, got {resolution}')
  for flag, fn in (('--output_dir', lambda: listing.check_output_dir(images_spec, output_dir)),):
    try:
      fn()
    except ValueError as e:
      raise config.ConfigError(f'{flag}={output_dir}: {e}') from None
  try:
    return listing.list_inputs(images_spec, exclude=output_dir)
  except (OSError, ValueError) as e:
    raise config.ConfigError(str(e) if '--images' in str(e) else f'--images={images_spec}: {e}') from None


def run(
  images_spec: str,
  output_dir: str,
  resolution: int,
  template: str = 'celebahq',
  max_bytes: Optional[int] = None,
  log_every_s: float = 30.0,
) -> dict:
  """Aligns every input (module docstring); returns ``{'ok', 'failed', 'exit_code'}``."""
  items = _checked(images_spec, output_dir, resolution, template)
  out = epath.Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  lines, ok = [], 0
  with progress.Progress(len(items), 'align', 'images', log_every_s) as report:
    for it in items:
      line = {'name': it.name, 'stem': it.stem, 'path': it.path}
      try:
        arr, rec = faces.load_aligned(it.path, resolution, template, max_bytes)
      except images.ImageDecodeError as e:
        logging.error('%s', e)
        lines.append(dict(line, status='error', error=str(e)))
      else:
        images.save_image(out / f'{it.stem}.png', arr)
        files.write_json(out / f'{it.stem}.json', rec)
        lines.append(dict(line, status='ok', error=None, faces=rec['faces']))
        ok += 1
      report.update(1)
  files.atomic_write_bytes(out / RECORDS, manifest.jsonl(lines))
  failed = len(items) - ok
  print(
    f'aligned {ok} of {len(items)} images ({template}, {resolution}x{resolution}) into {out}; {failed} failed'
  )
  for line in lines:
    if line['status'] != 'ok':
      print(f'  {line["error"]}')
  return {'ok': ok, 'failed': failed, 'exit_code': exit_codes.SOME_FAILED if failed else exit_codes.OK}
