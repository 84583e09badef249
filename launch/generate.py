r"""Generates images from a converted PGGAN: the sanity check after ``launch.convert``.

  python -m launch.generate --generator=ckpt/pggan_celebahq --latents=z.npy --output_dir=out
  python -m launch.generate --generator=demo --num_samples=16 --seed=0 --output_dir=out

Writes ``OUT/images.npy`` (float32 N x H x W x 3, the raw generator output, about [-1, 1]),
``OUT/latents.npy``, one ``OUT/sample_{i:05d}.png`` per sample and ``OUT/grid.png``
(see pmsfc_jax/jobs/generate.py).
"""

from absl import flags

from launch import flags as launch_flags
from pmsfc_jax.jobs import generate

flags.DEFINE_string('latents', None, '.npy file of latents, shape (N, z_dim) (or (z_dim,)).')
flags.DEFINE_integer('num_samples', None, 'Without --latents: number of N(0, I) latents (default 16).')
flags.DEFINE_integer('grid_max', None, 'At most this many samples in grid.png (default 64).')
flags.DEFINE_bool('pngs', None, 'Write one PNG per sample (default true).')
SHARED = ('generator', 'output_dir', 'seed', 'batch_size')


def main(argv):
  launch_flags.check(argv, SHARED, required=('generator', 'output_dir'))
  launch_flags.call(generate.run, **launch_flags.given(*SHARED, 'latents', 'num_samples', 'grid_max', 'pngs'))


if __name__ == '__main__':
  launch_flags.start(main, None, SHARED)
