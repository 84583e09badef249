"""Affinity + spectral clustering of S (pmsfc_jax.clustering): official parity, determinism, partitions."""

import numpy as np
import pytest
from scipy.sparse.linalg import svds
from sklearn.preprocessing import normalize

from pmsfc_jax.core import clustering as cl
from pmsfc_jax.core import composition


# Independent re-statements of the official code (discover_subspace.py: thrC, post_proC's affinity).
def _official_thrC(C, ro):
  n = C.shape[1]
  Cp = np.zeros((n, n))
  S = np.abs(np.sort(-np.abs(C), axis=0))
  Ind = np.argsort(-np.abs(C), axis=0)
  for i in range(n):
    cL1 = np.sum(S[:, i]).astype(float)
    csum, t = 0, 0
    while True:
      csum = csum + S[t, i]
      if csum > ro * cL1:
        Cp[Ind[0 : t + 1, i], i] = C[Ind[0 : t + 1, i], i]
        break
      t += 1
  return Cp


def _official_L(C, K, d, alpha):
  C = 0.5 * (C + C.T)
  r = min(d * K + 1, C.shape[0] - 1)
  U, S, _ = svds(C, r, v0=np.ones(C.shape[0]))
  U = U[:, ::-1].dot(np.diag(np.sqrt(S[::-1])))
  U = normalize(U, norm='l2', axis=1)
  Z = U.dot(U.T)
  Z = Z * (Z > 0)
  L = np.abs(Z**alpha)
  L = L / L.max()
  return 0.5 * (L + L.T)


@pytest.mark.parametrize('rho', [0.05, 0.2, 0.7, 1.0])
def test_threshold_matches_official(rho):
  C = np.random.default_rng(1).normal(size=(40, 40))
  np.testing.assert_array_equal(cl.threshold_columns(C, rho), C if rho >= 1 else _official_thrC(C, rho))


def test_dsc_affinity_matches_official_on_official_matrix(shared_data):
  M = np.load(shared_data / 'official' / 'bedroom_layer3_S.npy').astype(np.float64)[:160, :160]
  S = cl.from_official_layout(M)  # paper layout, diag zeroed
  M0 = M.copy()
  np.fill_diagonal(M0, 0)
  ref = _official_L(_official_thrC(M0, 0.2), 4, 6, 2.0)
  np.testing.assert_allclose(cl.dsc_affinity(S, 4, rho=0.2, subspace_dim=6, alpha=2.0), ref, atol=1e-9)


def test_paper_affinity():
  S = np.array([[5.0, -1.0, 0.0], [3.0, 7.0, 2.0], [0.0, -4.0, 1.0]])
  np.testing.assert_allclose(cl.paper_affinity(S), [[0, 2, 0], [2, 0, 3], [0, 3, 0]])


@pytest.mark.parametrize('name', ['celebahq', 'bedroom'])
@pytest.mark.parametrize('method', ['paper', 'dsc'])
def test_official_matrices_cluster_deterministically(shared_data, name, method):
  M = np.load(shared_data / 'official' / f'{name}_layer3_S.npy')
  S = cl.from_official_layout(M)
  labels, aff = cl.cluster(S, 6, method, seed=3)
  masks = composition.check_masks(cl.masks_from_labels(labels, 6), 512)
  sizes = masks.sum(axis=1)
  assert masks.shape == (6, 512) and np.all(sizes > 0)
  assert np.all(np.diff(sizes) <= 0), sizes  # largest first
  again, _ = cl.cluster(S, 6, method, seed=3)
  np.testing.assert_array_equal(labels, again)
  assert aff.shape == (512, 512) and np.allclose(aff, aff.T)


def test_order_by_size_ties_by_smallest_channel():
  labels = np.array([2, 2, 0, 1, 1, 0, 3])  # sizes: 0:2 (first ch 2), 1:2 (first 3), 2:2 (first 0), 3:1
  np.testing.assert_array_equal(cl.order_by_size(labels, 4), [0, 0, 1, 2, 2, 1, 3])


def test_fill_empty_clusters_is_deterministic_partition():
  aff = np.ones((6, 6)) - np.eye(6)
  aff[5, :4] = aff[:4, 5] = 0.1  # channel 5 weakest inside cluster 0
  labels = np.array([0, 0, 0, 0, 1, 0])
  fixed = cl.fill_empty_clusters(labels, 3, aff)
  np.testing.assert_array_equal(fixed, [0, 0, 0, 0, 1, 2])
  composition.check_masks(cl.masks_from_labels(fixed, 3))


def test_masks_from_labels_partition():
  m = cl.masks_from_labels(np.array([1, 0, 1, 2]), 3)
  np.testing.assert_array_equal(m, [[0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]])
  assert m.dtype == bool


@pytest.mark.parametrize(
  'S, match',
  [
    (np.zeros((4, 5)), r'must be square \(C, C\), got shape \(4, 5\)'),
    (np.zeros((3,)), r'must be square'),
    (np.array([[0.0, np.nan], [1.0, 0.0]]), r'has 1 NaN/Inf entries'),
  ],
)
def test_bad_matrix(S, match):
  with pytest.raises(ValueError, match=match):
    cl.cluster(S, 2)


def test_bad_matrix_channel_count():
  with pytest.raises(ValueError, match=r'is 8x8 but the generator has 64 channels at the chosen layer'):
    cl.check_matrix(np.zeros((8, 8)), 64)


def test_bad_arguments():
  with pytest.raises(ValueError, match=r"affinity must be one of \('paper', 'dsc'\)"):
    cl.cluster(np.eye(4), 2, 'nope')
  with pytest.raises(ValueError, match=r'num_subspaces must be in \[1, 4\]'):
    cl.cluster(np.ones((4, 4)), 5)


@pytest.mark.parametrize(
  'masks, match',
  [
    (np.array([[1, 1, 0], [0, 1, 1]], bool), 'channel 1 is in 2 subspaces'),
    (np.array([[1, 1, 1], [0, 0, 0]], bool), 'subspace 1 is empty'),
  ],
)
def test_check_masks_errors(masks, match):
  with pytest.raises(ValueError, match=match):
    composition.check_masks(masks)
