"""The paper's presets (and small CPU variants): functions that return configs.

``invert(arg)``: ``arg`` is a comma-separated list of presets, applied left to right:

* method: ``pmsfc`` (default) | ``mganprior``;
* task: ``reconstruct`` (default) | ``colorize`` | ``super_resolve`` | ``inpaint``;
* ``fast``: Adam with a larger learning rate and fewer iterations. The paper's lr 1e-4 moves the codes
  very slowly (on a 32x32 random PGGAN, 300 Adam steps raise PSNR by ~1 dB at lr 1e-4, ~15 dB at 1e-2,
  ~22 dB at 1e-1); ``fast`` uses lr 0.03 for 1000 iterations. Not the paper's setting.
* ``local``: small CPU variant (few iterations, no VGG resize, small batch), for smoke tests;
* ``paper``: the paper's settings, which are the defaults: a documented no-op for now.

mGANprior defaults (its open-source scripts): SGD ("GD") lr 1, 3000 iterations, alpha = 1/N, codes from
N(0, I), VGG lambda 1 (0.1 for inpainting), bilinear downsampling for super-resolution. The PmSFC paper
compares against mGANprior "in our configuration", so the ``mganprior`` preset keeps layer 3 and uses
N = R * K = 30 codes (mGANprior's own scripts use 20-30 codes at their composing layer 4-6).
Super-resolution: the paper upsamples 64x64 inputs to 1024 (factor 16).

``demo`` / ``reproduce`` (the main job and the small-scale tables on the shipped demo model),
``discover`` (Algorithm 1) and ``train_pggan`` (the demo generator) take ``None`` or ``'local'``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pmsfc_jax.core import config
from pmsfc_jax.core import gan

MODIFIERS = ('fast', 'local', 'paper')
INVERT_PRESETS = config.METHODS + config.TASKS + MODIFIERS


def _replace(cfg: Any, **sections: dict) -> Any:
  """``cfg`` with ``section=dict(field=value)`` applied to each named section."""
  return dataclasses.replace(
    cfg, **{k: dataclasses.replace(getattr(cfg, k), **v) for k, v in sections.items()}
  )


def _tokens(arg: str | None) -> list[str]:
  tokens = [t.strip() for t in (arg or '').split(',') if t.strip()]
  unknown = [t for t in tokens if t not in INVERT_PRESETS]
  if unknown:
    raise ValueError(
      f'unknown invert config preset(s) {unknown}; expected any of {", ".join(INVERT_PRESETS)}'
    )
  return tokens


def apply_invert(cfg: Any, arg: str | None) -> Any:
  """``cfg`` (an :class:`config.InvertConfig` or a subclass) with the presets of ``arg``."""
  tokens = _tokens(arg)
  method = next((t for t in tokens if t in config.METHODS), 'pmsfc')
  task = next((t for t in tokens if t in config.TASKS), 'reconstruct')
  if method == 'mganprior':
    cfg = _replace(
      cfg,
      method=dict(name=method, num_codes=30, init='normal'),
      optim=dict(optimizer='sgd', lr=1.0, iterations=3000),
    )
  else:
    cfg = _replace(
      cfg, method=dict(name=method, num_codes=5), optim=dict(optimizer='adam', lr=1e-4, iterations=7000)
    )
  cfg = _replace(cfg, task=dict(name=task))
  if task == 'inpaint' and method == 'mganprior':
    cfg = _replace(cfg, loss=dict(perceptual_weight=0.1))  # mGANprior inpainting.py: vgg_lambda 0.1
  if task == 'super_resolve':
    cfg = _replace(cfg, task=dict(factor=16, downsample='bilinear'))
  if 'fast' in tokens or 'local' in tokens:
    cfg = _replace(cfg, optim=dict(optimizer='adam', lr=0.03, iterations=1000), job=dict(chunk_size=250))
  if 'local' in tokens:
    cfg = _replace(
      cfg,
      optim=dict(iterations=50),
      job=dict(chunk_size=25, batch_size=2, checkpoint_every=10),
      loss=dict(perceptual=dataclasses.replace(cfg.loss.perceptual, resize=None)),
    )
    if task == 'super_resolve':
      cfg = _replace(cfg, task=dict(factor=4))
  return cfg


def invert(arg: str | None = None) -> config.InvertConfig:
  """Inversion config with the paper defaults; ``arg`` = comma-separated presets (module docstring)."""
  return apply_invert(config.InvertConfig(), arg)


def _variant(arg: str | None, what: str) -> bool:
  if arg not in (None, '', 'local'):
    raise ValueError(f"unknown {what}config variant {arg!r}; expected None or 'local'")
  return arg == 'local'


def demo(arg: str | None = None) -> config.DemoConfig:
  """The main job: both methods on the shipped demo model, ``fast`` Adam, VGG term at 64x64.

  Equal iterations for both methods; the VGG16 relu3_3 term runs at 64x64 (nearest upsampling of the
  32x32 demo images) instead of mGANprior's 256, to keep the demo fast on a CPU. ``'local'``: a few
  iterations, for the test suite.
  """
  local = _variant(arg, 'demo ')
  cfg = apply_invert(config.DemoConfig(), 'pmsfc,fast')
  percep = dataclasses.replace(cfg.loss.perceptual, resize=None if local else 64)
  cfg = _replace(
    cfg,
    model=dict(generator='demo', subspaces='demo'),
    optim=dict(iterations=300, lr=0.03),
    loss=dict(perceptual=percep),
    job=dict(output_dir='demo_out', images='', lpips=not local),
  )
  if local:
    cfg = _replace(cfg, optim=dict(iterations=8), job=dict(chunk_size=8), demo=dict(generated_seeds=(0,)))
  return cfg


def reproduce(arg: str | None = None) -> config.ReproduceConfig:
  """Tables 1-3 at small scale on held-out CelebA faces (``celeba_small/009001.jpg`` ..., never used in
  training): the demo's methods with the VGG term on the 32x32 images as they are (no resize: 800
  inversions must fit a 2-core CPU budget), 150 iterations, 4x area super-resolution. ``'local'``: 2
  faces, 2 iterations, for the test suite."""
  local = _variant(arg, 'reproduce ')
  d = demo()
  cfg = config.ReproduceConfig(
    **{f.name: getattr(d, f.name) for f in dataclasses.fields(config.InvertConfig)}, compare=d.compare
  )
  cfg = _replace(
    cfg,
    optim=dict(iterations=150),
    loss=dict(perceptual=dataclasses.replace(cfg.loss.perceptual, resize=None)),
    task=dict(factor=4, downsample='area', mask='../shared/data/images/masks/mask-2.png'),
    job=dict(output_dir='reproduce_out', images='../shared/data/celeba_small/009*.jpg', batch_size=25),
  )
  if local:
    cfg = _replace(
      cfg,
      optim=dict(iterations=2),
      job=dict(batch_size=2, chunk_size=2),
      reproduce=dict(num_images=2, grid_images=2),
    )
  return cfg


def discover(arg: str | None = None) -> config.DiscoverConfig:
  """Algorithm 1 with the paper's settings and the official batch of 4, mean reductions, S init 1e-4.
  ``'local'``: fewer iterations at a larger learning rate, for the 32x32 demo generator on a CPU."""
  cfg = config.DiscoverConfig()
  if _variant(arg, ''):
    cfg = _replace(cfg, optim=dict(iterations=300, lr=1e-3), job=dict(log_every=50, checkpoint_every=100))
  return cfg


def train_pggan(arg: str | None = None) -> gan.TrainConfig:
  """A 32x32 generator with 128 channels (z 512), sized for an accelerator; ``'local'``: the shipped
  demo model's settings, sized for a 2-core CPU (64 channels up to 16x16, 32 at 32x32). The training
  faces have no default: ``data.folder`` is required (``gan.Data``)."""
  cfg = gan.TrainConfig()
  if _variant(arg, ''):
    g = dataclasses.replace(cfg.model.generator, fmaps_base=1024, fmaps_max=64)
    cfg = _replace(
      cfg,
      model=dict(generator=g),
      job=dict(total_steps=20_000, steps_per_call=25, sample_every=500, checkpoint_every=500),
    )
  return cfg
