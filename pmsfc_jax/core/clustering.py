"""Affinity matrices and spectral clustering of the self-expressive matrix S into R subspaces.

Conventions: ``S`` is in the paper's layout, ``F(z) ~= F(z) S`` (Eq. 3) with the C channels of F as
columns, so column c of S holds the coefficients that rebuild channel c from the other channels and
``S[k, c]`` is the weight of channel k in channel c. The official PyTorch code stores the transpose
(``F_rec = M @ F`` with channels as rows, ``M = S^T``; ``discover_subspace.py:144-146``); the released
official matrices are in that layout (see :func:`from_official_layout`).

Official code cited below: guanyuelee/PmSFC at commit f26cbb46 (``PmSFC.py`` = the inversion script,
``discover_subspace.py`` = the S-training script; the two names were swapped in commit 7f93425 and
swapped back in cd19f303). Their ``thrC`` / ``post_proC`` bodies are identical (``PmSFC.py:26-66`` =
``discover_subspace.py:25-65``).

Three routes from S to channel labels, selectable by name (:data:`AFFINITIES`):

* ``'paper'``: ``A = (|S| + |S^T|) / 2`` (paper, below Eq. 5; diagonal zeroed) and scikit-learn's
  ``SpectralClustering(affinity='precomputed', assign_labels='kmeans', eigen_solver='arpack')``. The
  paper cites Ng, Jordan & Weiss (2002); scikit-learn does NOT compute NJW: it takes the K eigenvectors
  x of the symmetric normalised Laplacian ``I - D^-1/2 A D^-1/2`` with the smallest eigenvalues (the
  trivial one kept, the diagonal of A ignored), rescales them to ``u = D^-1/2 x`` (the generalised
  eigenvectors of ``(D - A) u = lambda D u``, i.e. the random-walk / Shi-Malik embedding) and runs
  k-means (``n_init=10``) on the rows of u, which are NOT normalised to unit length (NJW normalises each
  row of x). Scikit-learn 1.x ``sklearn/manifold/_spectral_embedding.py`` (laplacian ``normed=True``,
  ``embedding / dd``, ``drop_first=False``) and ``sklearn/cluster/_spectral.py`` (``k_means`` on the
  embedding); its docstring cites Shi & Malik, von Luxburg and Yu & Shi, not NJW.
* ``'dsc'``: the deep-subspace-clustering post-processing of the official INVERSION script
  ``PmSFC.py:89-95``, which loads the raw matrix M (its stored diagonal included) and calls
  ``thrC(M, 0.2)`` then ``post_proC(., n_subs=6, d_subs=6, power)``: per column of M (= row of S) keep
  the largest-magnitude entries up to a fraction ``rho`` of its L1 mass (the entry that crosses the bound
  is kept); symmetrise; rank ``d*R+1`` truncated SVD; ``U * sqrt(s)``; row-normalise; ``Z = U U^T``
  clipped at 0; ``L = |Z|^alpha`` normalised to max 1 and symmetrised; ``SpectralClustering(...,
  assign_labels='discretize')`` (its ``discretize`` step, Yu & Shi 2003, does normalise the rows).
* ``'dsc_relu'``: the route the official S-TRAINING script ``discover_subspace.py:219-240`` uses to
  compute and save its subspace masks (``subspace_mask_layer%d_iter%d_class%d.pkl``, lines 274-279):
  ``thrC(relu(M)^T, rho)^T`` then the same ``post_proC``. It differs from ``'dsc'`` twice: negative
  coefficients are set to 0 first, and the threshold runs over the rows of M (= the columns of relu(S)).
  (Transposing back does not matter: ``post_proC`` symmetrises first.) On the released matrices the two
  official routes disagree strongly (ARI 0.36 on CelebA-HQ, 0.03 on bedroom between their medoid
  partitions over 20 seeds; ``pmsfc_jax/assets/*/subspaces/PROVENANCE.md``): 47% / 29% of the
  off-diagonal entries are negative and relu discards them.

``diagonal`` (the ``'dsc'`` routes): ``'keep'`` (default) thresholds the matrix with the diagonal it
has, as both official scripts do; the released official matrices keep their 1e-4 init there (masked in
the official forward pass, ``discover_subspace.py:114,145``), which never survives the threshold itself
but counts in each column's L1 mass and so moves the cut (on the released bedroom matrix the affinity
changes by up to 0.18, on CelebA-HQ by 0.03). ``'zero'`` zeroes it first. Matrices trained here have an
exactly zero diagonal, so for them the two are identical. ``'paper'`` always zeroes it (Eq. 5).

``alpha`` (the power of the ``'dsc'`` routes) defaults to 2.0, what the authors pass on both official
command lines (PmSFC README and the last line of ``PmSFC.py``; ``discover_subspace.py``'s README
command); both scripts' argparse default is 3.0 (``PmSFC.py:281``, ``discover_subspace.py:333``).
``rho`` = 0.2 and ``d`` = 6 are both scripts' defaults. The SVD is dense (``numpy.linalg.svd``) where
the official code calls ``svds(C, r, v0=ones)``: the same rank-r subspace, hence the same ``U U^T``.

Deviations from the official code, on purpose: it is not deterministic (``SpectralClustering`` without
``random_state``, fitted twice, labels from the second fit, ``PmSFC.py:63-65``); here every random
choice is seeded, and for a given seed the partition equals what the official functions give with that
``random_state`` (tested). It orders subspaces by size with ``np.argsort(sizes)[::-1]`` (ties end up in
descending cluster id; ``PmSFC.py:97-104`` even ranks only clusters 1..K-1); here ties are broken by the
smallest channel index in the subspace, so the ordering is a pure function of the partition. Spectral
clustering may return fewer than R distinct labels (an empty subspace, not handled officially);
:func:`fill_empty_clusters` then fixes it deterministically (documented there).
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from sklearn.cluster import SpectralClustering
from threadpoolctl import threadpool_limits

from pmsfc_jax.core import discovery_config

AFFINITIES = discovery_config.AFFINITIES
DIAGONALS = discovery_config.DIAGONALS
Affinity = Literal['paper', 'dsc', 'dsc_relu']


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
  """S with its diagonal set to exactly 0 (the constraint of Eq. 5)."""
  S = np.array(S, copy=True)
  np.fill_diagonal(S, 0)
  return S


def apply_diagonal(S, diagonal: str) -> np.ndarray:
  """S as given (``diagonal='keep'``) or with its diagonal zeroed (``'zero'``)."""
  if diagonal == 'zero':
    return zero_diagonal(S)
  if diagonal == 'keep':
    return S
  raise ValueError(f'diagonal must be one of {DIAGONALS}, got {diagonal!r}')


def from_official_layout(M, diagonal: str = 'zero') -> np.ndarray:
  """Official PyTorch matrix (``F_rec = M F``, channels as rows) -> paper layout S = M^T; its diagonal
  zeroed (``'zero'``) or as stored (``'keep'``: the official 1e-4 init)."""
  return apply_diagonal(np.asarray(M).T, diagonal)


# ----------------------------------------------------------------------------------------------------
# Affinities.


def paper_affinity(S) -> np.ndarray:
  """A = (|S| + |S^T|) / 2 (paper, below Eq. 5), with a zero diagonal."""
  S = zero_diagonal(check_matrix(S))
  return 0.5 * (np.abs(S) + np.abs(S.T))


def threshold_columns(C, rho: float) -> np.ndarray:
  """Official ``thrC`` (``PmSFC.py:26-45``): per column keep the largest-|.| entries until their sum
  exceeds rho * the column's L1 mass.

  Exactly the official loop (the entry that crosses the threshold is kept), vectorised, in float64.
  rho >= 1 keeps C.
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


def thresholded(S, route: str = 'dsc', rho: float = 0.2, diagonal: str = 'keep') -> np.ndarray:
  """The thresholded coefficient matrix a ``'dsc'`` route hands to ``post_proC`` (before it symmetrises).

  ``'dsc'``: ``thrC(M)`` over the columns of the official layout M = S^T (``PmSFC.py:94``);
  ``'dsc_relu'``: ``thrC(relu(M)^T)^T`` (``discover_subspace.py:219-221``), here the columns of relu(S).
  Returned in the official layout for ``'dsc'`` and in the paper layout for ``'dsc_relu'`` (the two are
  transposes of each other; ``post_proC`` symmetrises first).
  """
  S = apply_diagonal(check_matrix(S), diagonal)
  if route == 'dsc':
    return threshold_columns(S.T, rho)
  if route == 'dsc_relu':
    return threshold_columns(np.maximum(S, 0.0), rho)
  raise ValueError(f"thresholded: route must be 'dsc' or 'dsc_relu', got {route!r}")


def post_pro_affinity(C, num_subspaces: int, subspace_dim: int = 6, alpha: float = 2.0) -> np.ndarray:
  """The affinity L (C, C) in [0, 1] of the official ``post_proC`` (``PmSFC.py:48-62``) from a
  thresholded coefficient matrix C."""
  C = np.asarray(C, np.float64)
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


def dsc_affinity(
  S,
  num_subspaces: int,
  rho: float = 0.2,
  subspace_dim: int = 6,
  alpha: float = 2.0,
  route: str = 'dsc',
  diagonal: str = 'keep',
) -> np.ndarray:
  """Official ``thrC`` + ``post_proC`` affinity L (C, C) in [0, 1] from S (paper layout), for the
  ``'dsc'`` (``PmSFC.py``) or ``'dsc_relu'`` (``discover_subspace.py``) route (module docstring)."""
  C = thresholded(S, route, rho=rho, diagonal=diagonal)
  return post_pro_affinity(C, num_subspaces, subspace_dim=subspace_dim, alpha=alpha)


def _top_singular(C: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
  """Left singular vectors / values of the r largest singular values, descending.

  The official code calls ``scipy.sparse.linalg.svds(C, r, v0=ones)``; a dense SVD gives the same
  subspace (U U^T does not depend on the signs of U's columns) deterministically, and is fast for C <= a
  few thousand.
  """
  U, s, _ = np.linalg.svd(C, full_matrices=False, hermitian=False)
  return U[:, :r], s[:r]


def affinity_matrix(
  S,
  method: Affinity,
  num_subspaces: int,
  rho: float = 0.2,
  subspace_dim: int = 6,
  alpha: float = 2.0,
  diagonal: str = 'keep',
) -> np.ndarray:
  """The affinity of route ``method`` ('paper', 'dsc' or 'dsc_relu')."""
  if method == 'paper':
    return paper_affinity(S)
  if method in ('dsc', 'dsc_relu'):
    return dsc_affinity(S, num_subspaces, rho, subspace_dim, alpha, route=method, diagonal=diagonal)
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
  diagonal: str = 'keep',
  num_threads: int | None = 1,
) -> tuple[np.ndarray, np.ndarray]:
  """S (C, C) -> (labels (C,) ordered by subspace size, affinity (C, C)). Deterministic for a seed.

  ``method``: the route (module docstring); ``rho``, ``subspace_dim`` (d), ``alpha`` and ``diagonal``
  apply to the ``'dsc'`` routes.

  ``num_threads`` caps the BLAS/OpenMP threads (threadpoolctl) of the SVD, eigen-solver and k-means:
  for C ~ 512 one thread is ~10x faster than many on a shared, busy CPU; None leaves them alone.
  """
  args = (S, num_subspaces, method, seed, rho, subspace_dim, alpha, diagonal)
  if num_threads is None:
    return _cluster(*args)
  with threadpool_limits(limits=num_threads):
    return _cluster(*args)


def _cluster(S, num_subspaces, method, seed, rho, subspace_dim, alpha, diagonal):
  S = check_matrix(S)
  aff = affinity_matrix(S, method, num_subspaces, rho, subspace_dim, alpha, diagonal)
  assign = 'kmeans' if method == 'paper' else 'discretize'
  labels = spectral_labels(aff, num_subspaces, seed=seed, assign_labels=assign)
  labels = fill_empty_clusters(labels, num_subspaces, aff)
  return order_by_size(labels, num_subspaces), aff


def reorder_permutation(labels: np.ndarray) -> np.ndarray:
  """Channel order that groups subspaces (0 first), channels ascending inside each (for Fig. 3 right)."""
  labels = np.asarray(labels)
  return np.lexsort((np.arange(labels.size), labels))


def random_partition(labels, seed: int = 0) -> np.ndarray:
  """The channels' labels randomly permuted: a random partition into subspaces of the same sizes as
  ``labels`` (the paper's ablation of the discovered subspaces, "random channel grouping")."""
  return np.random.default_rng(seed).permutation(np.asarray(labels))
