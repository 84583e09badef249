"""The schema of subspace discovery (Algorithm 1, Eq. 3-5) and clustering: ``DiscoverConfig``.

The same machinery as ``config.py`` (frozen dataclasses in sections; ``job`` holds how the work is done,
every other section affects the results). Defaults: Adam lr 1e-4, 3000 iterations (the paper), lambda 10,
mu 1 (the paper's Eq. 5 weights; the official ``discover_subspace.py`` defaults differ, see
``self_expression.py``), batch 4 and S initialised to 1e-4 (official code).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping, Union

from pmsfc_jax.core.config import GeneratorSplit
from pmsfc_jax.core.schema import check
from pmsfc_jax.core.schema import file_setting as _file
from pmsfc_jax.core.schema import one_of as _one_of

REDUCTIONS = ('mean', 'sum')
AFFINITIES = ('paper', 'dsc', 'dsc_relu')  # core/clustering.py: the three routes
DIAGONALS = ('keep', 'zero')


# ------------------------------------------------------------------------------------------------
# Subspace discovery (Algorithm 1, Eq. 3-5) and clustering.


@dataclasses.dataclass(frozen=True)
class SelfExpression:
  """Algorithm 1's hyper-parameters (static: part of the compiled step)."""

  iterations: int = 3000
  batch_size: int = 4  # official code: 4 (a multiple of the number of devices)
  lr: float = 1e-4
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  lam: float = 10.0  # lambda: weight of L_recD (Eq. 5)
  mu: float = 1.0  # mu: weight of ||S||_1 (Eq. 5)
  reduction: str = 'mean'  # 'mean' (official) or 'sum' (the paper's norms)
  init_value: float = 1e-4  # official init of S (off-diagonal; the diagonal is always 0)

  def __post_init__(self):
    check(
      self.reduction in REDUCTIONS, f'config.reduction must be one of {REDUCTIONS}, got {self.reduction!r}'
    )
    check(self.iterations >= 0, f'config.iterations must be a positive int, got {self.iterations!r}')
    check(self.batch_size >= 1, f'config.batch_size must be a positive int, got {self.batch_size!r}')


@dataclasses.dataclass(frozen=True)
class Clustering:
  num_subspaces: int = 6  # R
  # 'paper' ((|S|+|S^T|)/2), 'dsc' (official PmSFC.py post-processing) or 'dsc_relu' (the one
  # discover_subspace.py saves its masks with); core/clustering.py
  affinity: str = 'paper'
  rho: float = 0.2  # dsc routes: fraction of each column's L1 mass kept
  subspace_dim: int = 6  # dsc routes: d, the SVD keeps rank d*R+1
  alpha: float = 2.0  # dsc routes: power of the affinity (official command lines; argparse default 3)
  diagonal: str = 'keep'  # dsc routes: 'keep' the matrix's stored diagonal in thrC (official) or 'zero' it
  self_expressive_matrix: str = _file()  # S.npy: skip training, cluster this matrix
  matrix_layout: str = 'paper'  # 'official' transposes a matrix saved by the official code (M = S^T)

  def __post_init__(self):
    _one_of(self.affinity, AFFINITIES, 'cluster.affinity')
    _one_of(self.matrix_layout, ('paper', 'official'), 'cluster.matrix_layout')
    _one_of(self.diagonal, DIAGONALS, 'cluster.diagonal')


@dataclasses.dataclass(frozen=True)
class DiscoverJob:
  output_dir: str = ''
  log_every: int = 100  # steps per chunk (one progress line, host sync)
  steps_per_call: int = 0  # steps per jitted lax.scan; 0 = auto: 1 on CPU (core/loops.py)
  max_call_seconds: float = 5.0  # a jitted call lasts at most about this long (preemption bound; 0: none)
  checkpoint_every: int = 500  # orbax checkpoint of S + Adam state (resume)
  plots: bool = True
  exchange_samples: int = 4  # N: exchange grids are N x N

  def __post_init__(self):
    check(self.log_every >= 1, f'config.log_every must be a positive int, got {self.log_every!r}')


@dataclasses.dataclass(frozen=True)
class DiscoverConfig:
  """Algorithm 1 on a generator's split layer, then clustering (results); checkpoints and pictures (job)."""

  LEGACY: ClassVar[dict[str, Any]] = {
    'generator': 'model.generator',
    'layer': 'model.layer',
    **{f.name: f'optim.{f.name}' for f in dataclasses.fields(SelfExpression)},
    **{f.name: f'cluster.{f.name}' for f in dataclasses.fields(Clustering)},
    **{f.name: f'job.{f.name}' for f in dataclasses.fields(DiscoverJob)},
  }

  model: GeneratorSplit = GeneratorSplit()
  optim: SelfExpression = SelfExpression()
  cluster: Clustering = Clustering()
  job: DiscoverJob = DiscoverJob()
  seed: int = 0  # latents of training, spectral clustering, exchange-grid latents


DiscoverConfigLike = Union[DiscoverConfig, Mapping[str, Any], Any]
