"""Inversion config (issue 5): PmSFC (Eq. 6-9) or the mGANprior baseline (Eq. 1-2), per task.

``get_config(arg)``: ``arg`` is a comma-separated list of presets, applied left to right:

* method: ``pmsfc`` (default) | ``mganprior``;
* task: ``reconstruct`` (default) | ``colorize`` | ``super_resolve`` | ``inpaint``;
* ``fast``: Adam with a larger learning rate and fewer iterations. The paper's lr 1e-4 moves the codes
  very slowly (design.md: on a 32x32 random PGGAN, 300 Adam steps raise PSNR by ~1 dB at lr 1e-4, ~15 dB
  at 1e-2, ~22 dB at 1e-1); ``fast`` uses lr 0.03 for 1000 iterations. Not the paper's setting.
* ``local``: small CPU variant (few iterations, no VGG resize, small batch), for smoke tests.

Examples: ``get_config('pmsfc')``, ``get_config('mganprior,colorize')``, ``get_config('pmsfc,inpaint,local')``;
on the command line ``--config=launch/configs/invert.py:mganprior,colorize --config.lr=0.5``.

Paper defaults (PmSFC, "Experimental Setup"): PGGAN split at layer 3, R = 6 subspaces, K = 5 codes per
subspace, Adam lr 1e-4, betas (0.9, 0.999), 7000 iterations, loss ``MSE + VGG16 relu3_3 L1`` (Eq. 8).
mGANprior defaults (its open-source scripts): SGD ("GD") lr 1, 3000 iterations, alpha = 1/N, codes from
N(0, I), VGG lambda 1 (0.1 for inpainting), bilinear downsampling for super-resolution. The PmSFC paper
compares against mGANprior "in our configuration", so the ``mganprior`` preset keeps layer 3 and uses
N = R * K = 30 codes (mGANprior's own scripts use 20-30 codes at their composing layer 4-6).
Super-resolution: the paper upsamples 64x64 inputs to 1024 (factor 16).
"""

from __future__ import annotations

import ml_collections

METHODS = ('pmsfc', 'mganprior')
TASKS = ('reconstruct', 'colorize', 'super_resolve', 'inpaint')
MODIFIERS = ('fast', 'local', 'paper')


def _base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # What to run.
  c.method = 'pmsfc'                # 'pmsfc' | 'mganprior'
  c.task = 'reconstruct'            # 'reconstruct' | 'colorize' | 'super_resolve' | 'inpaint'
  c.layer = 3                       # split layer of G = G2 o G1 (paper: 3)
  c.num_subspaces = 6               # R (informational: the subspace masks fix it)
  c.num_codes = 5                   # K per subspace (pmsfc) or N in total (mganprior)
  # Optimisation (paper: Adam, lr 1e-4, (0.9, 0.999), 7000 iterations).
  c.optimizer = 'adam'              # 'adam' | 'sgd'
  c.lr = 1e-4
  c.b1 = 0.9
  c.b2 = 0.999
  c.adam_eps = 1e-8
  c.momentum = 0.0                  # SGD momentum (mGANprior: none)
  c.iterations = 7000
  c.chunk_size = 500                # steps per run_steps call in invert() (jobs checkpoint between chunks)
  c.steps_per_call = 0              # steps per jitted lax.scan; 0 = auto: 1 on CPU (pmsfc_jax/loops.py)
  c.init = 'normal'                 # latent init: 'normal' (N(0, I)) | 'zeros'
  c.weight_eps = 1e-3               # |sum_k tanh(w_k)| clamp of Eq. 6 (see composition.py)
  # Loss (Eq. 2 / 8 / 9).
  c.pixel_weight = 1.0
  c.perceptual_weight = 1.0
  c.perceptual = ml_collections.ConfigDict()
  c.perceptual.layer = 'relu3_3'
  c.perceptual.resize = 256         # None: no resize (mGANprior: 256, nearest)
  c.perceptual.resize_method = 'nearest'
  c.perceptual.feature_scale = 0.001
  # Tasks.
  c.factor = 16                     # super_resolve: downsampling factor (paper: 64 -> 1024)
  c.downsample = 'bilinear'         # 'bilinear' (PyTorch, no anti-aliasing; mGANprior) | 'area'
  c.mask = ''                       # inpaint: mask PNG (white = hole, mGANprior convention)
  c.mask_threshold = 0.5            # hole if mask value > threshold; None keeps mGANprior's soft mask
  # Job (used by launch/invert.py and pmsfc_jax/pipeline.py).
  c.generator = ''
  c.subspaces = ''
  c.images = ''
  c.output_dir = ''
  c.batch_size = 8
  c.checkpoint_every = 500
  c.distributed = False
  c.seed = 0
  return c


def _apply_method(c: ml_collections.ConfigDict, method: str):
  c.method = method
  if method == 'mganprior':
    c.num_codes = 30
    c.optimizer = 'sgd'
    c.lr = 1.0
    c.iterations = 3000
    c.init = 'normal'
  else:
    c.num_codes = 5
    c.optimizer = 'adam'
    c.lr = 1e-4
    c.iterations = 7000


def _apply_task(c: ml_collections.ConfigDict, task: str):
  c.task = task
  if task == 'inpaint' and c.method == 'mganprior':
    c.perceptual_weight = 0.1       # mGANprior inpainting.py: vgg_lambda 0.1
  if task == 'super_resolve':
    c.factor = 16
    c.downsample = 'bilinear'


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Config with the paper defaults; ``arg`` = comma-separated presets (see the module docstring)."""
  tokens = [t.strip() for t in (arg or '').split(',') if t.strip()]
  unknown = [t for t in tokens if t not in METHODS + TASKS + MODIFIERS]
  if unknown:
    raise ValueError(f'unknown invert config preset(s) {unknown}; expected any of '
                     f'{", ".join(METHODS + TASKS + MODIFIERS)}')
  c = _base()
  method = next((t for t in tokens if t in METHODS), 'pmsfc')
  task = next((t for t in tokens if t in TASKS), 'reconstruct')
  _apply_method(c, method)
  _apply_task(c, task)
  if 'fast' in tokens or 'local' in tokens:
    c.optimizer = 'adam'
    c.lr = 0.03
    c.iterations = 1000
    c.chunk_size = 250
  if 'local' in tokens:
    c.iterations = 50
    c.chunk_size = 25
    c.batch_size = 2
    c.perceptual.resize = None
    c.checkpoint_every = 10
    if c.task == 'super_resolve':
      c.factor = 4
  return c
