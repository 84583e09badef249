"""Config of the main job (``python -m launch.demo``): both methods on the shipped demo model.

Built on ``launch/configs/invert.py``'s ``fast`` preset (Adam, larger lr than the paper's 1e-4, which moves
the codes too slowly for a demo on a CPU; see that file). Equal iterations for both methods; mGANprior gets
N = R * K codes, as many as PmSFC has in total. The VGG16 relu3_3 perceptual term runs at 64x64 (nearest
upsampling of the 32x32 demo images) instead of mGANprior's 256, to keep the demo fast on a CPU.

``get_config('local')``: a few iterations, for the test suite.
"""

import ml_collections

from launch.configs import invert


def get_config(arg=None):
  c = invert.get_config('pmsfc,fast')
  c.generator = 'demo'
  c.subspaces = 'demo'
  c.output_dir = 'demo_out'
  c.images = ''                 # '' = the embedded default (astronaut + generated faces)
  c.max_images = 16
  c.generated_seeds = (0, 1, 2)
  c.methods = ('mganprior', 'pmsfc')
  c.num_codes_pmsfc = 5         # K per subspace (paper)
  c.num_codes_mganprior = 30    # N = R * K (R = 6 subspaces)
  c.iterations = 300
  c.lr = 0.03
  c.lpips = True
  c.perceptual.resize = 64
  c.seed = 0
  if arg == 'local':
    c.iterations = 8
    c.chunk_size = 8
    c.generated_seeds = (0,)
    c.perceptual.resize = None
    c.lpips = False
  elif arg:
    raise ValueError(f"unknown demo config variant {arg!r}; expected None or 'local'")
  return c
