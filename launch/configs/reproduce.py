"""Config of ``python -m launch.reproduce``: the paper's tables at small scale on held-out CelebA faces.

Built on the demo config (``fast`` Adam, mGANprior with N = R * K codes), with the VGG term on the 32x32
images as they are (no resize: 800 inversions must fit a 2-core CPU budget). Held-out faces:
``../shared/data/celeba_small/009001.jpg`` .. (never used in training; 000001-009000 trained the model).
``get_config('local')``: 2 faces, 2 iterations, for the test suite.
"""

from launch.configs import demo


def get_config(arg=None):
  c = demo.get_config()
  c.output_dir = 'reproduce_out'
  c.images = '../shared/data/celeba_small/009*.jpg'
  c.first_image = 1              # index into the sorted list: [0] is 009000.jpg, a training face
  c.num_images = 100
  c.batch_size = 25
  c.tasks = ('reconstruct', 'colorize', 'super_resolve', 'inpaint')
  c.factor = 4                   # Table 3 is 4x-style super-resolution (the paper: 64 -> 1024 faces)
  c.downsample = 'area'
  c.mask = '../shared/data/images/masks/mask-2.png'   # white = hole (mGANprior)
  c.inpaint_perceptual_weight = 0.1   # mGANprior's inpainting script uses vgg lambda 0.1
  c.iterations = 150
  c.perceptual.resize = None
  c.grid_images = 8
  if arg == 'local':
    c.num_images = 2
    c.batch_size = 2
    c.iterations = 2
    c.chunk_size = 2
    c.perceptual.resize = None
    c.grid_images = 2
  elif arg:
    raise ValueError(f"unknown reproduce config variant {arg!r}; expected None or 'local'")
  return c
