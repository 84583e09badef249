"""THE config schema: every setting of every job, its default (written once, here) and its checks.

Configs are frozen dataclasses (hashable: usable as ``jax.jit`` static arguments) made of sections.
Whether a setting affects results follows from its section: everything outside ``job`` does (the batch
job fingerprints it, see :func:`result_settings`); ``job`` holds how the work is done (paths of inputs
and outputs, batch size, checkpoint cadence, devices, logging). Settings that name files (``metadata
{'file': True}``) are fingerprinted by the files' contents, not their paths.

Parse configs once at the boundary with :func:`parse` (ConfigDict, dict, or the typed object; old flat
spellings such as ``lr`` or ``perceptual.resize`` are translated with a warning naming the new key, see
``schema.py``) and build command-line configs with :func:`to_config_dict`. The paper's presets are
functions in ``presets.py``. The GAN training config of the demo generator is ``gan.TrainConfig``.

Paper defaults (PmSFC, "Experimental Setup"): PGGAN split at layer 3, R = 6 subspaces (fixed by the
subspace masks), K = 5 codes per subspace, Adam lr 1e-4, betas (0.9, 0.999), 7000 iterations, loss
``MSE + VGG16 relu3_3 L1`` (Eq. 8; by default on the degraded tasks too: a deviation from Eq. 9, see
``objective.py``). Subspace discovery (Algorithm 1) and clustering: ``discovery_config.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping, Union

from pmsfc_jax.core import mesh as mesh_lib
from pmsfc_jax.core import schema
from pmsfc_jax.models import vgg

ConfigError = schema.ConfigError
Removed = schema.Removed
parse = schema.parse
override = schema.override
to_dict = schema.to_dict
to_config_dict = schema.to_config_dict
check = schema.check
_one_of = schema.one_of
_file = schema.file_setting

METHODS = ('pmsfc', 'mganprior')
TASKS = ('reconstruct', 'colorize', 'super_resolve', 'inpaint')
DOWNSAMPLE_METHODS = ('bilinear', 'area')
CROPS = ('center', 'pad')
PIXEL_MEANS = ('known', 'all')
ALIGNS = ('none', 'face')
ALIGN_TEMPLATES = ('auto', 'celebahq', 'celeba')  # io/alignment.py; auto: celeba for 'demo', else celebahq
SCHEDULES = ('constant', 'cosine', 'warmup_cosine')
REPRODUCE_ROWS = (
  'mganprior',
  'pmsfc_paper',
  'mganprior_fast',
  'pmsfc_fast',
  'pmsfc_fast_eq9',
  'pmsfc_paper_full',
)


# ------------------------------------------------------------------------------------------------
# Inversion (Eq. 1-2, 6-9).


@dataclasses.dataclass(frozen=True)
class GeneratorSplit:
  """The generator (checkpoint directory or shipped name, e.g. ``'demo'``) and its split layer l."""

  generator: str = _file()
  layer: int = 3  # G = G2 o G1 at layer l (paper: 3, the first 8x8 conv)


@dataclasses.dataclass(frozen=True)
class Model(GeneratorSplit):
  """+ the subspace directory (``launch.discover`` output or shipped name); mGANprior needs none."""

  subspaces: str = _file()
  compute_dtype: str = 'float32'  # G1/G2/VGG activations; the rest stays float32 (core/objective.py)

  def __post_init__(self):
    _one_of(self.compute_dtype, ('float32', 'bfloat16'), 'model.compute_dtype')


@dataclasses.dataclass(frozen=True)
class Method:
  """PmSFC (K codes per subspace) or mGANprior (N codes in total), Eq. 6-7 / Eq. 1."""

  name: str = 'pmsfc'
  num_codes: int = 5  # K per subspace (pmsfc) or N in total (mganprior)
  init: str = 'normal'  # latent init: 'normal' (N(0, I)) | 'zeros'
  weight_eps: float = 1e-3  # |sum_k tanh(w_k)| clamp of Eq. 6 (see composition.py)

  def __post_init__(self):
    _one_of(self.name, METHODS, 'method.name')
    _one_of(self.init, ('normal', 'zeros'), 'method.init')
    check(self.num_codes >= 1, f'config.method.num_codes must be >= 1, got {self.num_codes}')
    schema.positive(self.weight_eps, 'config.method.weight_eps')


@dataclasses.dataclass(frozen=True)
class Optim:
  """The optimiser of the codes and weights (paper: Adam lr 1e-4, (0.9, 0.999), 7000 iterations)."""

  optimizer: str = 'adam'  # 'adam' | 'sgd' (mGANprior's GD)
  lr: float = 1e-4
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  momentum: float = 0.0  # SGD momentum (mGANprior: none)
  iterations: int = 7000
  # Learning-rate schedule over ``iterations`` (core/optimizers.py, optax's): 'constant' (the paper's and
  # mGANprior's), 'cosine' (lr -> 0), 'warmup_cosine' (linear 0 -> lr over warmup_fraction * iterations).
  schedule: str = 'constant'
  warmup_fraction: float = 0.05  # warmup_cosine only

  def __post_init__(self):
    _one_of(self.optimizer, ('adam', 'sgd'), 'optim.optimizer')
    _one_of(self.schedule, SCHEDULES, 'optim.schedule')
    schema.positive(self.lr, 'config.optim.lr (--lr)')
    check(self.iterations >= 1, f'config.optim.iterations (--iterations) must be >= 1, got {self.iterations}')
    check(
      0.0 <= self.warmup_fraction < 1.0,
      f'config.optim.warmup_fraction must be in [0, 1), got {self.warmup_fraction}',
    )

  def unused(self) -> tuple[str, ...]:
    """Settings this optimiser does not read (left out of the fingerprint)."""
    return ('warmup_fraction',) * (self.schedule != 'warmup_cosine')


@dataclasses.dataclass(frozen=True)
class PerceptualConfig:
  """Static settings of the perceptual feature V (Eq. 2 / 8; hashable: a jit static argument).

  layer: VGG16 ReLU to cut at (``relu1_1`` .. ``relu5_3``); mGANprior: relu3_3 (``features[:16]``).
  resize: square size the images are resized to before VGG (None or 0: no resize); mGANprior: 256.
  resize_method: 'nearest' (PyTorch's ``F.interpolate`` nearest, mGANprior) or any
    ``jax.image.resize`` method ('bilinear', 'bicubic', ...).
  feature_scale: factor inside the VGG term (mGANprior's ``* 0.001``).
  feature_loss: 'l1' (mean absolute difference, mGANprior's default) or 'l2' (mean squared difference).
  """

  layer: str = 'relu3_3'
  resize: int | None = 256
  resize_method: str = 'nearest'
  feature_scale: float = 0.001
  feature_loss: str = 'l1'

  def __post_init__(self):
    vgg.check_layer(self.layer)
    if self.resize == 0:
      object.__setattr__(self, 'resize', None)
    check(self.feature_loss in ('l1', 'l2'), f"feature_loss must be 'l1' or 'l2', got {self.feature_loss!r}")
    check(
      self.resize is None or (isinstance(self.resize, int) and self.resize >= 1),
      f'resize must be a positive int or None, got {self.resize!r}',
    )


@dataclasses.dataclass(frozen=True)
class Loss:
  """Eq. 2 / 8: ``pixel_weight * MSE + perceptual_weight * feature_scale * L1(V(x), V(x_hat))`` (+ Eq. 9)."""

  pixel_weight: float = 1.0
  perceptual_weight: float = 1.0  # mGANprior's vgg_lambda (0.1 for its inpainting)
  perceptual: PerceptualConfig = PerceptualConfig()
  degraded_perceptual: bool = True  # VGG term on the degraded tasks too: a DEVIATION from Eq. 9
  pixel_mean: str = 'known'  # inpaint: 'known' (mean over known pixels) | 'all' (mGANprior's)

  def __post_init__(self):
    _one_of(self.pixel_mean, PIXEL_MEANS, 'loss.pixel_mean')


@dataclasses.dataclass(frozen=True)
class Task:
  """The degradation P of Eq. 9 and how inputs are framed."""

  name: str = 'reconstruct'  # 'reconstruct' | 'colorize' | 'super_resolve' | 'inpaint'
  factor: int = 16  # super_resolve: downsampling factor (paper: 64 -> 1024)
  downsample: str = 'bilinear'  # 'bilinear' (PyTorch, no anti-aliasing; mGANprior) | 'area'
  mask: str = _file()  # inpaint: mask PNG (white = hole, mGANprior convention)
  mask_threshold: float | None = 0.5  # hole if mask value > threshold; None keeps the soft mask
  crop: str = 'center'  # non-square inputs: 'center' crop | 'pad' with white
  align: str = 'none'  # 'face': detect, landmark and align each face photo first (io/faces.py)
  align_template: str = 'auto'  # 'celebahq' (CelebA-HQ / FFHQ square) | 'celeba' (img_align_celeba) | auto

  def __post_init__(self):
    check(self.name in TASKS, f'unknown task {self.name!r}; expected one of {", ".join(TASKS)}')
    _one_of(self.downsample, DOWNSAMPLE_METHODS, 'task.downsample')
    _one_of(self.crop, CROPS, 'task.crop')
    _one_of(self.align, ALIGNS, 'task.align')
    _one_of(self.align_template, ALIGN_TEMPLATES, 'task.align_template')
    if self.name == 'super_resolve':
      check(self.factor >= 1, f'config.task.factor must be >= 1, got {self.factor}')

  def unused(self) -> tuple[str, ...]:
    """Settings this task does not read (left out of the fingerprint)."""
    return (
      (() if self.name == 'super_resolve' else ('factor', 'downsample'))
      + (() if self.name == 'inpaint' else ('mask_threshold',))
      + (('crop',) if self.align == 'face' else ('align_template',))
    )


def align_template(cfg: Any) -> str:
  """``task.align_template`` with ``auto`` resolved: the shipped ``demo`` generator was trained on aligned
  CelebA crops (``celeba``); the official CelebA-HQ PGGAN on the CelebA-HQ square (``celebahq``)."""
  t = cfg.task.align_template
  return t if t != 'auto' else ('celeba' if cfg.model.generator == 'demo' else 'celebahq')


@dataclasses.dataclass(frozen=True)
class Job:
  """How the batch job runs; nothing here changes an image's result but early stop (``stop_tolerance``,
  which the batch job's fingerprint records apart, ``fingerprint.payload``)."""

  images: str = ''  # directory (recursive), glob, list file or one image
  output_dir: str = ''
  batch_size: int = 8  # rounded up to a multiple of the device count; 0: auto (jobs/fit.py)
  checkpoint_every: int = 500  # steps between orbax checkpoints of the batch state (0: never)
  chunk_size: int = 500  # steps per run_steps call in invert() (jobs checkpoint between chunks)
  steps_per_call: int = 0  # steps per jitted lax.scan; 0 = auto: 1 on CPU (core/loops.py)
  remat: bool = False  # jax.checkpoint over G2's blocks: less activation memory, same results (tested)
  num_devices: int = 0  # use only the first N local devices (0: all)
  num_workers: int = 4  # image decoding threads
  prefetch_batches: int = 2  # batches decoded ahead
  log_every_s: float = 30.0  # seconds between progress lines
  max_call_seconds: float = 5.0  # bound on one jitted call = on preemption latency (core/loops.py); 0: none
  max_input_bytes: int = 256 * 2**20  # larger input files are refused before they are read
  lpips: bool = False  # also compute LPIPS against the target
  overwrite_config: bool = False  # redo everything when the output directory holds another config
  retry_failed: bool = False  # retry images whose manifest line is an error
  # Early stop per image (core/early_stop.py; fingerprinted when on): stop when the best loss so far
  # improved by less than stop_tolerance (relative) over the last stop_window steps; 0 = off. With it on,
  # the job refills a stopped image's batch slot with the next image (jobs/invert/refill.py).
  stop_tolerance: float = 0.0
  stop_window: int = 100
  distributed: bool = False  # multi-host: jax.distributed.initialize()
  coordinator_address: str = ''  # host:port of process 0 (default: env / cluster auto-detection)
  num_processes: int = 0
  process_id: int = -1
  # Several processes: one mesh over every device ('global', lockstep) or one per host ('host'); core/mesh.py.
  mesh: str = 'global'
  heartbeat_timeout_s: int = 100  # --distributed: a dead peer ends the others within this (jobs/multihost.py)

  def __post_init__(self):
    check(self.batch_size >= 0, f'--batch_size must be >= 1 (or 0 / auto), got {self.batch_size}')
    check(self.checkpoint_every >= 0, f'--checkpoint_every must be >= 0, got {self.checkpoint_every}')
    check(
      min(self.chunk_size, self.steps_per_call, self.max_call_seconds) >= 0 and self.max_input_bytes >= 1,
      'config.job.chunk_size, steps_per_call and max_call_seconds must be >= 0, max_input_bytes >= 1',
    )
    check(
      0 <= self.stop_tolerance < 1 and self.stop_window >= 1,
      f'config.job.stop_tolerance must be in [0, 1) and stop_window >= 1, got {self.stop_tolerance}, '
      f'{self.stop_window}',
    )
    _one_of(self.mesh, mesh_lib.SCOPES, 'job.mesh')
    check(
      self.heartbeat_timeout_s >= 1,
      f'config.job.heartbeat_timeout_s must be >= 1, got {self.heartbeat_timeout_s}',
    )


_JOB_KEYS = tuple(f.name for f in dataclasses.fields(Job))


@dataclasses.dataclass(frozen=True)
class InvertConfig:
  """PmSFC / mGANprior inversion: what to compute (model .. task, seed) and how to run it (job)."""

  LEGACY: ClassVar[dict[str, Any]] = {
    'method': 'method.name',
    'task': 'task.name',
    'num_codes': 'method.num_codes',
    'init': 'method.init',
    'weight_eps': 'method.weight_eps',
    'layer': 'model.layer',
    'generator': 'model.generator',
    'subspaces': 'model.subspaces',
    'optimizer': 'optim.optimizer',
    'lr': 'optim.lr',
    'learning_rate': 'optim.lr',
    'b1': 'optim.b1',
    'beta1': 'optim.b1',
    'b2': 'optim.b2',
    'beta2': 'optim.b2',
    'eps': 'optim.eps',
    'adam_eps': 'optim.eps',
    'momentum': 'optim.momentum',
    'iterations': 'optim.iterations',
    'pixel_weight': 'loss.pixel_weight',
    'perceptual_weight': 'loss.perceptual_weight',
    **{f'perceptual.{f.name}': f'loss.perceptual.{f.name}' for f in dataclasses.fields(PerceptualConfig)},
    'factor': 'task.factor',
    'downsample': 'task.downsample',
    'mask': 'task.mask',
    'mask_threshold': 'task.mask_threshold',
    'crop': 'task.crop',
    'align': 'task.align',
    **{k: f'job.{k}' for k in _JOB_KEYS},
    'force': 'job.overwrite_config',
    'num_subspaces': Removed('R is fixed by the subspace masks of model.subspaces'),
  }

  model: Model = Model()
  method: Method = Method()
  optim: Optim = Optim()
  loss: Loss = Loss()
  task: Task = Task()
  job: Job = Job()
  seed: int = 0  # base seed of the per-image keys


# What the public functions accept: the typed config, or a ConfigDict / (nested) mapping parsed by ``parse``.
InvertConfigLike = Union[InvertConfig, Mapping[str, Any], Any]


def result_settings(cfg: Any) -> dict:
  """The settings that change results: every section but ``job``, file settings left out (their
  contents count instead), and the task settings the task does not read."""

  def keep(obj) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
      value = getattr(obj, f.name)
      if f.name == 'job' or f.metadata.get('file') or f.name in getattr(obj, 'unused', tuple)():
        continue
      out[f.name] = keep(value) if dataclasses.is_dataclass(value) else value
    return out

  out, task = keep(cfg), getattr(getattr(cfg, 'task', None), 'name', 'inpaint')
  unused = ('pixel_mean',) * (task != 'inpaint') + ('degraded_perceptual',) * (task == 'reconstruct')
  return {**out, 'loss': {k: v for k, v in out['loss'].items() if k not in unused}} if 'loss' in out else out


# ------------------------------------------------------------------------------------------------
# Demo and reproduction: both methods at equal iterations.


@dataclasses.dataclass(frozen=True)
class Compare:
  """mGANprior and PmSFC side by side: mGANprior gets N = R * K codes, as many as PmSFC in total."""

  methods: tuple[str, ...] = ('mganprior', 'pmsfc')
  num_codes_pmsfc: int = 5  # K per subspace (paper)
  num_codes_mganprior: int = 30  # N = R * K (R = 6 subspaces)


@dataclasses.dataclass(frozen=True)
class Demo:
  max_images: int = 16  # of --images
  generated_seeds: tuple[int, ...] = (0, 1, 2)  # without --images: astronaut + these generated faces


@dataclasses.dataclass(frozen=True)
class Reproduce:  # the fair reproduction: presets.reproduce_row; optim / loss = the shared fast setting
  num_images: int = 100  # faces of the fast rows
  slow_images: int = 10  # faces (the first of those) of the rows at mGANprior's own iteration counts
  max_slow_iterations: int = 0  # > 0 caps those rows' iterations (smoke tests only)
  tasks: tuple[str, ...] = TASKS
  rows: tuple[str, ...] = REPRODUCE_ROWS[:5]  # row 6 (the paper's 7000 iterations) only when asked for
  inpaint_perceptual_weight: float = 0.1  # mGANprior's inpainting script uses vgg lambda 0.1
  grid_images: int = 8


_COMPARE_LEGACY = {k: f'compare.{k}' for k in ('methods', 'num_codes_pmsfc', 'num_codes_mganprior')}


@dataclasses.dataclass(frozen=True)
class DemoConfig(InvertConfig):
  compare: Compare = Compare()
  demo: Demo = Demo()

  LEGACY: ClassVar[dict[str, Any]] = {
    **InvertConfig.LEGACY,
    **_COMPARE_LEGACY,
    **{f.name: f'demo.{f.name}' for f in dataclasses.fields(Demo)},
  }


@dataclasses.dataclass(frozen=True)
class ReproduceConfig(InvertConfig):
  compare: Compare = Compare()
  reproduce: Reproduce = Reproduce()

  LEGACY: ClassVar[dict[str, Any]] = {
    **InvertConfig.LEGACY,
    **_COMPARE_LEGACY,
    **{f.name: f'reproduce.{f.name}' for f in dataclasses.fields(Reproduce)},
  }
