r"""Compares a folder of results with a folder of references: PSNR, SSIM, LPIPS, colorization AuC, NIQE.

  python -m launch.evaluate --reference_dir=A --candidate_dir=B \
    --metrics=psnr,ssim,lpips_vgg,lpips_alex,auc[,niqe] --output=FILE.csv [--resize] [--niqe_model=MAT]

Pairs images by file name (``x.png`` <- ``x.png`` / ``x.jpg`` / ``x_inv.png`` / ``x-result.png``; rule in
``pmsfc_jax/evaluation.py`` and docs/metrics.md), writes one CSV row per reference image plus a mean
row, and prints a markdown table. Missing / unreadable / ambiguous files are listed, not fatal. A size
mismatch is an error naming both files unless ``--resize``. Exit status 0, or 1 on a usage error.
"""

import sys

from absl import app
from absl import flags
from etils import epath

from pmsfc_jax import evaluation
from pmsfc_jax import metrics

_REFERENCE = flags.DEFINE_string('reference_dir', None, 'Folder of reference (ground-truth) images.')
_CANDIDATE = flags.DEFINE_string('candidate_dir', None, 'Folder of images to evaluate.')
_METRICS = flags.DEFINE_list('metrics', ['psnr', 'ssim', 'lpips_vgg'],
                             f'Comma-separated metrics among {",".join(metrics.METRICS)}.')
_OUTPUT = flags.DEFINE_string('output', None, 'CSV file to write (one row per image + a mean row).')
_RESIZE = flags.DEFINE_bool('resize', False, 'Resize candidates to the reference size instead of failing.')
_BATCH = flags.DEFINE_integer('batch_size', 16, 'Pairs per metric call.')
_NIQE_MODEL = flags.DEFINE_string('niqe_model', None, "NIQE pristine model: MATLAB modelparameters.mat or "
                                  "BasicSR niqe_pris_params.npz (default: $PMSFC_NIQE_MODEL or basicsr's).")
_MAX_ROWS = flags.DEFINE_integer('max_table_rows', 50, 'Rows of the printed markdown table.')


def main(argv):
  del argv
  for f in (_REFERENCE, _CANDIDATE, _OUTPUT):
    if not f.value:
      raise app.UsageError(f'--{f.name} is required')
  names = [m.strip() for m in _METRICS.value if m.strip()]
  try:
    pairs, unmatched = evaluation.evaluate(
        _REFERENCE.value, _CANDIDATE.value, names, resize=_RESIZE.value, batch_size=_BATCH.value,
        niqe_model=_NIQE_MODEL.value, log=lambda msg: print(msg, file=sys.stderr))
  except (evaluation.SizeMismatchError, ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  out = epath.Path(_OUTPUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(evaluation.to_csv(pairs, names))
  print(evaluation.to_markdown(pairs, names, _MAX_ROWS.value))
  problems = [p for p in pairs if not p.values]
  if problems or unmatched:
    print('\nNot evaluated:')
    for p in problems:
      print(f'- {p.reference.name}: {p.status}')
    for c in unmatched:
      print(f'- candidate {c.name}: matches no reference')
  print(f'\nwrote {out} ({sum(1 for p in pairs if p.values)} of {len(pairs)} pairs evaluated)')
  return 0


if __name__ == '__main__':
  app.run(main)
