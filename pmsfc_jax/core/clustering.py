"""Affinity matrices and spectral clustering of the self-expressive matrix S into R subspaces.

Conventions: ``S`` is in the paper's layout, ``F(z) ~= F(z) S`` (Eq. 3) with the C channels of F as
columns, so column c of S holds the coefficients that rebuild channel c from the other channels and
``S[k, c]`` is the weight of channel k in channel c. The official PyTorch code stores the transpose
(``F_rec = M @ F`` with channels as rows, ``M = S^T``); the matrices in ``shared/data/official/`` are in
that layout (see :func:`from_official_layout`).

Two routes from S to channel labels, selectable by name (:data:`AFFINITIES`):

* ``'paper'``: ``A = (|S| + |S^T|) / 2`` and spectral clustering (Ng, Jordan, Weiss 2002) on A,
  i.e. scikit-learn's ``SpectralClustering(affinity='precomputed', assign_labels='kmeans')``.
* ``'dsc'``: the deep-subspace-clustering post-processing that the official inversion script
  (``discover_subspace.py``: ``thrC`` + ``post_proC``) applies to the raw matrix: per column, keep the
  largest-magnitude entries up to a fraction ``rho`` of its L1 mass; symmetrise; rank ``d*R+1``
  truncated SVD; ``U * sqrt(s)``; row-normalise; ``Z = U U^T`` clipped at 0; ``L = |Z|^alpha``
  normalised to max 1; spectral clustering with ``assign_labels='discretize'``.
  The official script thresholds the columns of *its* layout (= the rows of S here); we do the same so
  that ``dsc`` on an official matrix reproduces that script. Everything after the threshold is symmetric.

Deviations from the official code, on purpose: it is not deterministic (no ``random_state``, so its
labels change between runs); here every random choice is seeded. It orders subspaces by size with a
stable sort of cluster ids; here ties are broken by the smallest channel index in the subspace, so the
ordering is a pure function of the partition. Spectral clustering may return fewer than R distinct labels
(an empty subspace); :func:`fill_empty_clusters` then fixes it deterministically (documented there).
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from sklearn.cluster import SpectralClustering
from threadpoolctl import threadpool_limits

from pmsfc_jax.core import config

AFFINITIES = config.AFFINITIES
Affinity = Literal['paper', 'dsc']


# ----------------------------------------------------------------------------------------------------
# Input checks.


def check_matrix(S, num_channels: int | None = None, name: str = 'S') -> np.ndarray:
  """Returns S as float64 (C, C) or raises ValueError naming ``name`` and what is wrong."""
  S = np.asarray(S)
  if S.ndim != 2 or S.shape[0] != S.shape[1]:
    raise ValueError(f'{name}: the self-expressive matrix must be square (C, C), got shape {S.shape}')
  if not np.issubdtype(S.dtype, np.floating) and not np.issubdtype(S.dtype, np.integer):
    raise ValueError(f'{name}: the self-expressive matrix must be numeric, got dtype {S.dtype}')
  S = S.astype(np.float64)
  if not np.all(np.isfinite(S)):
    bad = int(np.sum(~np.isfinite(S)))
    raise ValueError(f'{name}: the self-expressive matrix has {bad} NaN/Inf entries')
  if num_channels is not None and S.shape[0] != num_channels:
    raise ValueError(
      f'{name}: the self-expressive matrix is {S.shape[0]}x{S.shape[1]} but the generator '
      f'has {num_channels} channels at the chosen layer'
    )
  return S


def zero_diagonal(S) -> np.ndarray:
  """S with its diagonal set to exactly 0 (the official matrices keep their 1e-4 init on the diagonal,
  which the official forward pass masks out; the constraint of Eq. 5 is diag(S) = 0)."""
  S = np.array(S, copy=True)
  np.fill_diagonal(S, 0)
  return S


def from_official_layout(M) -> np.ndarray:
  """Official PyTorch matrix (``F_rec = M F``, channels as rows) -> paper layout S = M^T, diag zeroed."""
  return zero_diagonal(np.asarray(M).T)


# ----------------------------------------------------------------------------------------------------
# Affinities.


def paper_affinity(S) -> np.ndarray:
  """A = (|S| + |S^T|) / 2 (paper, below Eq. 5), with a zero diagonal."""
  S = zero_diagonal(check_matrix(S))
  return 0.5 * (np.abs(S) + np.abs(S.T))


def threshold_columns(C, rho: float) -> np.ndarray:
  """Official ``thrC``: per column keep the largest-|.| entries until their sum exceeds rho * L1 mass.

  Exactly the official loop (the entry that crosses the threshold is kept), vectorised. rho >= 1 keeps C.
  """
  C = np.asarray(C, np.float64)
  if rho >= 1:
    return C.copy()
  a = np.abs(C)
  order = np.argsort(-a, axis=0, kind='stable')
  sorted_abs = np.take_along_axis(a, order, axis=0)
  csum = np.cumsum(sorted_abs, axis=0)
  total = csum[-1:]
  # keep index t iff the running sum *before* t has not yet exceeded rho * total.
  before = np.concatenate([np.zeros_like(csum[:1]), csum[:-1]], axis=0)
  keep_sorted = before <= rho * total
  keep = np.zeros_like(keep_sorted)
  np.put_along_axis(keep, order, keep_sorted, axis=0)
  return np.where(keep, C, 0.0)


def dsc_affinity(
  S, num_subspaces: int, rho: float = 0.2, subspace_dim: int = 6, alpha: float = 2.0
) -> np.ndarray:
  """Official ``thrC`` + ``post_proC`` affinity L (C, C) in [0, 1] from S (paper layout).

  The threshold runs over the columns of the official layout M = S^T (what the official inversion
  script does to the raw matrix it loads), i.e. over the rows of S.
  """
  S = zero_diagonal(check_matrix(S))
  C = threshold_columns(S.T, rho)
  C = 0.5 * (C + C.T)
  n = C.shape[0]
  r = min(subspace_dim * num_subspaces + 1, n - 1)
  U, s = _top_singular(C, r)
  U = U * np.sqrt(s)[None, :]
  norms = np.linalg.norm(U, axis=1, keepdims=True)
  U = U / np.maximum(norms, 1e-12)
  Z = U @ U.T
  Z = Z * (Z > 0)
  L = np.abs(Z**alpha)
  L = L / max(L.max(), 1e-300)
  return 0.5 * (L + L.T)


def _top_singular(C: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
  """Left singular vectors / values of the r largest singular values, descending.

  The official code calls ``scipy.sparse.linalg.svds(C, r, v0=ones)``; a dense SVD gives the same
  subspace (U U^T does not depend on the signs of U's columns) deterministically, and is fast for C <= a
  few thousand.
  """
  U, s, _ = np.linalg.svd(C, full_matrices=False, hermitian=False)
  return U[:, :r], s[:r]


def affinity_matrix(
  S, method: Affinity, num_subspaces: int, rho: float = 0.2, subspace_dim: int = 6, alpha: float = 2.0
) -> np.ndarray:
  """The affinity of route ``method`` ('paper' or 'dsc')."""
  if method == 'paper':
    return paper_affinity(S)
  if method == 'dsc':
    return dsc_affinity(S, num_subspaces, rho=rho, subspace_dim=subspace_dim, alpha=alpha)
  raise ValueError(f'affinity must be one of {AFFINITIES}, got {method!r}')


# ----------------------------------------------------------------------------------------------------
# Spectral clustering, ordering, masks.


def spectral_labels(
  affinity: np.ndarray, num_subspaces: int, seed: int = 0, assign_labels: str = 'kmeans'
) -> np.ndarray:
  """scikit-learn spectral clustering on a precomputed affinity; raw labels (C,) in [0, R)."""
  n = affinity.shape[0]
  if not 1 <= num_subspaces <= n:
    raise ValueError(f'num_subspaces must be in [1, {n}] (the number of channels), got {num_subspaces}')
  if num_subspaces == 1:
    return np.zeros(n, np.int64)
  sc = SpectralClustering(
    n_clusters=num_subspaces,
    affinity='precomputed',
    assign_labels=assign_labels,
    random_state=seed,
    eigen_solver='arpack',
  )
  with warnings.catch_warnings():
    warnings.filterwarnings('ignore', message='Graph is not fully connected')
    return np.asarray(sc.fit_predict(affinity), np.int64)


def fill_empty_clusters(labels: np.ndarray, num_subspaces: int, affinity: np.ndarray) -> np.ndarray:
  """Makes every label in [0, R) non-empty, deterministically.

  While a label is unused, take the largest cluster (ties: smallest label) and move out its channel
  with the weakest total affinity to the rest of that cluster (ties: smallest channel index) into the
  empty label. Spectral clustering with 'discretize' occasionally leaves a cluster empty; this keeps
  the partition closest to what it found.
  """
  labels = np.array(labels, np.int64, copy=True)
  for empty in range(num_subspaces):
    if np.any(labels == empty):
      continue
    sizes = np.bincount(labels, minlength=num_subspaces)
    big = int(np.argmax(sizes))
    members = np.flatnonzero(labels == big)
    strength = affinity[np.ix_(members, members)].sum(axis=1)
    labels[members[int(np.argmin(strength))]] = empty
  return labels


def order_by_size(labels: np.ndarray, num_subspaces: int) -> np.ndarray:
  """Relabels so subspace 0 is the largest; ties broken by the smallest channel index in the subspace."""
  labels = np.asarray(labels, np.int64)
  keys = []
  for k in range(num_subspaces):
    members = np.flatnonzero(labels == k)
    keys.append((-len(members), members[0] if len(members) else labels.size, k))
  new_of_old = np.empty(num_subspaces, np.int64)
  for new, (_, _, old) in enumerate(sorted(keys)):
    new_of_old[old] = new
  return new_of_old[labels]


def masks_from_labels(labels, num_subspaces: int) -> np.ndarray:
  """labels (C,) in [0, R) -> binary masks m (R, C) bool; every channel in exactly one subspace."""
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f'labels must be 1-D (C,), got shape {labels.shape}')
  if labels.size and (labels.min() < 0 or labels.max() >= num_subspaces):
    raise ValueError(f'labels must lie in [0, {num_subspaces}), got range [{labels.min()}, {labels.max()}]')
  return labels[None, :] == np.arange(num_subspaces)[:, None]


def cluster(
  S,
  num_subspaces: int,
  method: Affinity = 'paper',
  seed: int = 0,
  rho: float = 0.2,
  subspace_dim: int = 6,
  alpha: float = 2.0,
  num_threads: int | None = 1,
) -> tuple[np.ndarray, np.ndarray]:
  """S (C, C) -> (labels (C,) ordered by subspace size, affinity (C, C)). Deterministic for a seed.

  ``num_threads`` caps the BLAS/OpenMP threads (threadpoolctl) of the SVD, eigen-solver and k-means:
  for C ~ 512 one thread is ~10x faster than many on a shared, busy CPU; None leaves them alone.
  """
  if num_threads is None:
    return _cluster(S, num_subspaces, method, seed, rho, subspace_dim, alpha)
  with threadpool_limits(limits=num_threads):
    return _cluster(S, num_subspaces, method, seed, rho, subspace_dim, alpha)


def _cluster(S, num_subspaces, method, seed, rho, subspace_dim, alpha):
  S = check_matrix(S)
  aff = affinity_matrix(S, method, num_subspaces, rho=rho, subspace_dim=subspace_dim, alpha=alpha)
  assign = 'kmeans' if method == 'paper' else 'discretize'
  labels = spectral_labels(aff, num_subspaces, seed=seed, assign_labels=assign)
  labels = fill_empty_clusters(labels, num_subspaces, aff)
  return order_by_size(labels, num_subspaces), aff


def reorder_permutation(labels: np.ndarray) -> np.ndarray:
  """Channel order that groups subspaces (0 first), channels ascending inside each (for Fig. 3 right)."""
  labels = np.asarray(labels)
  return np.lexsort((np.arange(labels.size), labels))
