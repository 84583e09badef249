"""The paper's presets (and small CPU variants): functions that return configs.

``invert(arg)``: ``arg`` is a comma-separated list of presets (method, task, then modifiers):

* method: ``pmsfc`` (default) | ``mganprior``;
* task: ``reconstruct`` (default) | ``colorize`` | ``super_resolve`` | ``inpaint``;
* ``paper``: PmSFC exactly as the paper configures it ("Experimental Setup" and Eq. 9): Adam lr 1e-4,
  betas (0.9, 0.999), 7000 iterations, K = 5, layer 3 (R = 6 comes from the subspaces), and Eq. 9 as
  written: ``||x - P(x_hat)||^2`` alone on the degraded tasks (``loss.degraded_perceptual=False``), the
  perceptual term only in Eq. 8 (reconstruction); its squared norm runs over the whole image
  (``loss.pixel_mean='all'``: for inpainting only a constant factor, which Adam does not see). It differs
  from the library default in exactly these two loss settings (tested). Refused with ``mganprior`` (the
  paper gives no settings of its own for it: that is the ``mganprior`` preset) and with ``fast`` /
  ``local`` (then it would not be the paper's); ``eq9`` alone is Eq. 9 as written with any optimiser.
* ``eq9``: only the Eq. 9 part of ``paper`` (``degraded_perceptual=False``).
* ``fast``: Adam with a larger learning rate and fewer iterations; not the paper's setting. From the
  convergence sweep (docs/convergence.md: the demo model, 10 held-out faces, one optimisation per setting
  recorded at log-spaced steps): lr 0.03, PmSFC's best constant Adam lr on reconstruction at nearly every
  step (31.60 dB at 1600 steps against 31.34 at 0.1 and 30.23 at 0.01; the paper's 1e-4 reaches 15.2 dB
  at 800), constant (cosine / warmup-cosine over the same steps end 0.7-1.4 dB lower); 1000 iterations
  for reconstruction (its PSNR still rises to 3200 steps: the count is a cost choice) and 400 for
  super-resolution (FAST_SR_ITERATIONS: PSNR against the unseen full-resolution face peaks at 200-300
  steps and falls after, 19.53 dB at 400 against 19.31 at 1000, LPIPS-Alex 0.031 against 0.029; for both
  methods). Before issue 19 ``fast`` ran super-resolution for 1000 iterations too: to resume such a folder
  pass ``--iterations=1000``.
* ``local``: small CPU variant (few iterations, no VGG resize, small batch), for smoke tests.

The library default (no modifier) is the paper's optimiser with ONE documented deviation: the VGG term
also runs on the degraded tasks (``config.Loss.degraded_perceptual``), as in mGANprior's scripts.

``mganprior``: mGANprior's own settings, from its open-source scripts (genforce/mganprior at a4ff818):
SGD ("GD", no momentum) lr 1 (e.g. ``multi_code_inversion.py:93,97``, ``inversion/inversion_methods.py:
10-11``); iterations per task as its scripts: 3000 for reconstruction (``multi_code_inversion.py:99``)
and inpainting (``inpainting.py:111``), 1500 for colorization (``colorization.py:115``), 2000 for
super-resolution (``super_resolution.py:112``); alpha = 1/N and codes from N(0, I)
(``derivable_models/derivable_generator.py:118-121``, whatever ``--init_type`` says); VGG lambda 1,
0.1 for inpainting (``inpainting.py:100``), whose pixel term is the mean over ALL pixels
(``loss.pixel_mean='all'``: ``utils/manipulate.py:66-71`` + ``nn.MSELoss``); bilinear downsampling for
super-resolution (``utils/manipulate.py:24-29``). The PmSFC paper compares against mGANprior "in our
configuration", so the preset keeps layer 3 and uses N = R * K = 30 codes; mGANprior's own scripts use
N = 20-30 at composing layer 6 (reconstruction, super-resolution) or 4 (inpainting, colorization) by
default (``multi_code_inversion.py:73,75``, ``inpainting.py:83,85``, ``colorization.py:89,91``,
``super_resolution.py:80,82``), and its README's GAN-inversion example uses layer 8 with N = 20
(``README.md:40-45``). Super-resolution: the paper upsamples 64x64 inputs to 1024 (factor 16).

``demo`` / ``reproduce`` (the main job and the fair small-scale tables on the shipped demo model; the
rows of the latter: :func:`reproduce_row`), ``discover`` (Algorithm 1) and ``train_pggan`` (the demo
generator) take ``None`` or ``'local'``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pmsfc_jax.core import config
from pmsfc_jax.core import discovery_config
from pmsfc_jax.core import gan

MODIFIERS = ('fast', 'local', 'paper', 'eq9')
INVERT_PRESETS = config.METHODS + config.TASKS + MODIFIERS
# mGANprior's iterations per task (its scripts' argparse defaults, cited in the module docstring).
MGANPRIOR_ITERATIONS = {'reconstruct': 3000, 'inpaint': 3000, 'colorize': 1500, 'super_resolve': 2000}
# ``fast`` super-resolution: where the sweep's PSNR stops rising (module docstring, docs/convergence.md).
FAST_SR_ITERATIONS = 400


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
  if 'paper' in tokens:
    clash = [t for t in tokens if t in ('mganprior', 'fast', 'local')]
    if clash:
      raise ValueError(
        f"preset 'paper' is PmSFC with the paper's exact settings and cannot be combined with {clash}; "
        "use 'eq9' for Eq. 9 as written with another optimiser, 'mganprior' for mGANprior's own settings"
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
      optim=dict(optimizer='sgd', lr=1.0, momentum=0.0, iterations=MGANPRIOR_ITERATIONS[task]),
      loss=dict(pixel_mean='all'),
    )
  else:
    cfg = _replace(
      cfg, method=dict(name=method, num_codes=5), optim=dict(optimizer='adam', lr=1e-4, iterations=7000)
    )
  cfg = _replace(cfg, task=dict(name=task))
  if task == 'inpaint' and method == 'mganprior':
    cfg = _replace(cfg, loss=dict(perceptual_weight=0.1))  # mGANprior inpainting.py:100: vgg_lambda 0.1
  if task == 'super_resolve':
    cfg = _replace(cfg, task=dict(factor=16, downsample='bilinear'))
  if 'paper' in tokens:  # "Experimental Setup" + Eq. 9 (see the module docstring)
    cfg = _replace(
      cfg,
      model=dict(layer=3),
      method=dict(num_codes=5),
      optim=dict(optimizer='adam', lr=1e-4, b1=0.9, b2=0.999, iterations=7000),
      loss=dict(pixel_mean='all'),
    )
  if 'paper' in tokens or 'eq9' in tokens:
    cfg = _replace(cfg, loss=dict(degraded_perceptual=False))
  if 'fast' in tokens or 'local' in tokens:
    iterations = FAST_SR_ITERATIONS if task == 'super_resolve' else 1000
    cfg = _replace(
      cfg, optim=dict(optimizer='adam', lr=0.03, iterations=iterations), job=dict(chunk_size=250)
    )
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
  """Inversion config with the library defaults; ``arg`` = comma-separated presets (module docstring)."""
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
  """The fair small-scale reproduction of Tables 1-3 (``jobs/reproduce.py``) on the user's held-out aligned
  CelebA faces (``--images``; the README names the public files), rows :func:`reproduce_row`.

  The config's own ``optim`` / ``loss`` are the shared fast setting of rows 3-5 (Adam lr 0.03, 150
  iterations: today's 2-core CPU budget, not the paper's); VGG16 relu3_3 on the 32x32 images as they are
  (no resize, for every row: mGANprior resizes to 256, 64x the cost), 4x area super-resolution, and
  inpainting with the generated centre-square hole (``task.mask=''``, ``degradations.center_hole_mask``).
  ``'local'``: 4 faces (2 for the slow rows), 2 iterations (the slow rows capped at 3), for the tests."""
  local = _variant(arg, 'reproduce ')
  d = demo()
  cfg = config.ReproduceConfig(
    **{f.name: getattr(d, f.name) for f in dataclasses.fields(config.InvertConfig)}, compare=d.compare
  )
  cfg = _replace(
    cfg,
    optim=dict(iterations=150),
    loss=dict(perceptual=dataclasses.replace(cfg.loss.perceptual, resize=None)),
    task=dict(factor=4, downsample='area', mask=''),
    job=dict(output_dir='reproduce_out', images='', batch_size=25),
  )
  if local:
    cfg = _replace(
      cfg,
      optim=dict(iterations=2),
      job=dict(batch_size=2, chunk_size=2),
      reproduce=dict(num_images=4, slow_images=2, max_slow_iterations=3, grid_images=2),
    )
  return cfg


ROW_NUMBERS = {row: str(i + 1) for i, row in enumerate(config.REPRODUCE_ROWS)}
# Rows at mGANprior's / the paper's own iteration counts: on the first reproduce.slow_images faces.
SLOW_ROWS = ('mganprior', 'pmsfc_paper', 'pmsfc_paper_full')
ROW_TITLES = {
  'mganprior': 'mGANprior, its own settings (SGD lr 1, its per-task iterations, N = {n})',
  'pmsfc_paper': "PmSFC, the paper's setting (Adam lr 1e-4, Eq. 9 as written, K = {k}) at row 1's iterations",
  'mganprior_fast': 'mGANprior, shared fast setting (Adam lr {lr}, N = {n})',
  'pmsfc_fast': 'PmSFC, shared fast setting (Adam lr {lr}, K = {k})',
  'pmsfc_fast_eq9': 'PmSFC, shared fast setting, Eq. 9 as written (no VGG term on degraded tasks)',
  'pmsfc_paper_full': "PmSFC, the paper's setting and its 7000 iterations (K = {k})",
}


def reproduce_row(cfg: config.ReproduceConfig, row: str, task: str) -> config.InvertConfig:
  """The inversion config of one row of the reproduction table for ``task``.

  Every row keeps ``cfg``'s model, perceptual network, task framing (factor, downsampling, mask), job and
  seed; the faces and per-image keys are the job's. Rows:

  1. ``mganprior``: ``invert('mganprior,<task>')`` (SGD lr 1, its per-task iterations, pixel mean over all
     pixels, VGG lambda 0.1 for inpainting), N = ``compare.num_codes_mganprior``;
  2. ``pmsfc_paper``: ``invert('pmsfc,<task>,paper')`` at row 1's iteration count (equal iterations; the
     paper's 7000 are out of a CPU budget), K = ``compare.num_codes_pmsfc``;
  3. / 4. ``mganprior_fast`` / ``pmsfc_fast``: ``cfg`` itself (optimiser and loss shared by both methods,
     VGG lambda ``reproduce.inpaint_perceptual_weight`` for inpainting) with the method's code count;
  5. ``pmsfc_fast_eq9``: row 4 with Eq. 9 as written (``loss.degraded_perceptual=False``);
  6. ``pmsfc_paper_full`` (not in the default ``reproduce.rows``): row 2 at the paper's own 7000
     iterations, on row 1's faces.

  ``reproduce.max_slow_iterations`` (> 0) caps rows 1, 2 and 6 (smoke tests only).
  """
  config.check(
    row in config.REPRODUCE_ROWS, f'unknown reproduction row {row!r}; expected one of {config.REPRODUCE_ROWS}'
  )
  base = config.InvertConfig(
    **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(config.InvertConfig)}
  )
  base = _replace(base, task=dict(name=task))
  codes = {'mganprior': cfg.compare.num_codes_mganprior, 'pmsfc': cfg.compare.num_codes_pmsfc}
  if row not in SLOW_ROWS:
    method = row.split('_')[0]
    out = _replace(base, method=dict(name=method, num_codes=codes[method], init='normal'))
    if task == 'inpaint':
      out = _replace(out, loss=dict(perceptual_weight=cfg.reproduce.inpaint_perceptual_weight))
    return _replace(out, loss=dict(degraded_perceptual=False)) if row == 'pmsfc_fast_eq9' else out
  own = apply_invert(base, f'mganprior,{task}')
  out = own if row == 'mganprior' else apply_invert(base, f'pmsfc,{task},paper')
  iterations = (out if row == 'pmsfc_paper_full' else own).optim.iterations
  if cfg.reproduce.max_slow_iterations > 0:
    iterations = min(iterations, cfg.reproduce.max_slow_iterations)
  method = out.method.name
  return dataclasses.replace(
    out,
    task=base.task,  # the reproduction's framing (the presets' super-resolution factor is 16)
    method=dataclasses.replace(out.method, num_codes=codes[method]),
    optim=dataclasses.replace(out.optim, iterations=iterations),
  )


def discover(arg: str | None = None) -> discovery_config.DiscoverConfig:
  """Algorithm 1 with the paper's settings and the official batch of 4, mean reductions, S init 1e-4.
  ``'local'``: fewer iterations at a larger learning rate, for the 32x32 demo generator on a CPU."""
  cfg = discovery_config.DiscoverConfig()
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
