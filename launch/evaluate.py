r"""Compares a folder of results with a folder of references: PSNR, SSIM, LPIPS, colorization AuC, NIQE.

  python -m launch.evaluate --reference_dir=A --candidate_dir=B \
    --metrics=psnr,ssim,lpips_vgg,lpips_alex,auc[,niqe] --output=FILE.csv [--resize] [--niqe_model=MAT]

Pairs images by file name (``x.png`` <- ``x.png`` / ``x.jpg`` / ``x_inv.png`` / ``x-result.png``; rule in
``pmsfc_jax/evaluation/evaluate.py`` and docs/metrics.md), writes one CSV row per reference image plus a
mean row, and prints a markdown table. Missing / unreadable / ambiguous files are listed, not fatal. A size
mismatch is an error naming both files unless ``--resize``. PSNR of identical images is ``inf``; the mean
row averages the finite values and counts the infinite ones. Exit status 0; 1 when no pair could be
evaluated; 2 on a usage error (one line: unknown metric, missing folder, size mismatch).
"""

from absl import flags

from launch import flags as launch_flags
from pmsfc_jax.evaluation import evaluate

flags.DEFINE_string('reference_dir', None, 'Folder of reference (ground-truth) images.')
flags.DEFINE_string('candidate_dir', None, 'Folder of images to evaluate.')
flags.DEFINE_list(
  'metrics', None, 'Among psnr,ssim,lpips_vgg,lpips_alex,auc,niqe (default psnr,ssim,lpips_vgg).'
)
flags.DEFINE_bool('resize', None, 'Resize candidates to the reference size instead of failing.')
flags.DEFINE_string(
  'niqe_model',
  None,
  'NIQE pristine model: MATLAB modelparameters.mat or an .npz with BasicSR keys '
  '(default: $PMSFC_NIQE_MODEL, else the copy shipped in pmsfc_jax/assets/niqe).',
)
flags.DEFINE_integer('max_table_rows', None, 'Rows of the printed markdown table (default 50).')
SHARED = ('output', 'batch_size')


def main(argv):
  launch_flags.check(argv, SHARED, required=('reference_dir', 'candidate_dir', 'output'))
  kwargs = launch_flags.given(
    'reference_dir', 'candidate_dir', 'output', 'resize', 'batch_size', 'niqe_model', 'max_table_rows'
  )
  if flags.FLAGS['metrics'].present:
    kwargs['metrics_names'] = flags.FLAGS.metrics
  return launch_flags.call(evaluate.run, **kwargs)


if __name__ == '__main__':
  launch_flags.start(main, None, SHARED)
