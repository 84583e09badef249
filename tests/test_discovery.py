"""Subspace discovery (Alg. 1, Eq. 3-5): planted structure, tiny PGGAN end to end, sharding, resume."""

import dataclasses
import os
import signal

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from pmsfc_jax.core import clustering
from pmsfc_jax.core import composition
from pmsfc_jax.core import discovery_config
from pmsfc_jax.core import editing
from pmsfc_jax.core import loops
from pmsfc_jax.core import self_expression as discovery
from pmsfc_jax.io import subspaces
from pmsfc_jax.jobs import discover as discover_job
from pmsfc_jax.jobs import plots
from pmsfc_jax.models import pggan
from tests import configs


@dataclasses.dataclass(frozen=True)
class PlantedFeatures:
  """C channels in ``groups`` independent subspaces: channel c = fixed combination of ``dim`` random
  maps of its group (fresh maps per key), so c is a fixed linear combination of its group's channels."""

  groups: int = 4
  per_group: int = 12
  dim: int = 4
  seed: int = 0

  @property
  def num_channels(self):
    return self.groups * self.per_group

  def truth(self):
    lab = np.repeat(np.arange(self.groups), self.per_group)
    return lab[np.random.default_rng(self.seed).permutation(lab.size)]  # groups interleaved

  def features(self, aux, keys):
    lab = jnp.asarray(self.truth())
    coeffs = jnp.asarray(
      np.random.default_rng(self.seed + 1).normal(size=(self.num_channels, self.dim)), jnp.float32
    )

    def one(k):
      u = jax.random.normal(k, (16, self.groups, self.dim))
      return jnp.einsum('pcd,cd->pc', u[:, lab, :], coeffs).reshape(4, 4, self.num_channels)

    return jax.vmap(one)(keys)


def _config(**kw):
  return configs.discover(**{**dict(layer=3, iterations=20, batch_size=4, lr=1e-3, log_every=10), **kw})


@pytest.mark.parametrize('method', ['paper', 'dsc'])
def test_planted_subspaces_are_recovered(method, planted_S):
  model, S = planted_S
  labels, _ = clustering.cluster(S, model.groups, method, seed=0, subspace_dim=model.dim)
  assert adjusted_rand_score(model.truth(), labels) >= 0.9


@pytest.fixture(scope='module')
def planted_S():
  # L_recD needs a decoder; the synthetic model has none, so this trains L_recF + mu ||S||_1 (Eq. 3, 5).
  model = PlantedFeatures()
  cfg = _config(iterations=300, batch_size=8, lr=1e-2, lam=0.0, mu=1e-4, reduction='sum', log_every=150)
  S, hist = discovery.discover_features(model, None, cfg, jax.random.key(0))
  assert hist['rec_f'][-1] < 1e-3 * hist['rec_f'][0]
  np.testing.assert_array_equal(np.diag(S), 0)
  return model, S


@pytest.fixture(scope='module')
def tiny_generator():
  """Smaller than conftest's: a 16x16 random PGGAN, z_dim 32, 32 channels at layer 3 (fast compiles)."""
  cfg = pggan.GeneratorConfig(resolution=16, z_dim=32, fmaps_base=512, fmaps_max=32)
  return pggan.Generator(cfg, pggan.init_params(cfg, jax.random.key(0)))


@pytest.fixture(scope='module')
def tiny_run(tiny_generator):
  S, hist = discovery.discover(tiny_generator, _config(), jax.random.key(0))
  return S, hist


def test_tiny_pggan_end_to_end(tiny_generator, tiny_run):
  S, hist = tiny_run
  assert S.shape == (32, 32) and S.dtype == np.float32
  np.testing.assert_array_equal(np.diag(S), 0.0)  # exactly, not approximately
  assert set(hist) == {'rec_f', 'rec_d', 'l1', 'total'} and all(len(v) == 20 for v in hist.values())
  assert hist['total'][-5:].mean() < 0.9 * hist['total'][:5].mean()
  assert hist['rec_d'][-1] < hist['rec_d'][0] and hist['rec_f'][-1] < hist['rec_f'][0]
  np.testing.assert_allclose(hist['total'], hist['rec_f'] + 10 * hist['rec_d'] + hist['l1'], rtol=1e-5)
  labels, _ = clustering.cluster(S, 6, 'paper', seed=0)
  masks = composition.check_masks(clustering.masks_from_labels(labels, 6), 32)
  np.testing.assert_array_equal(masks.sum(axis=0), 1)
  # Same seed -> identical; another seed -> different.
  S2, hist2 = discovery.discover(tiny_generator, _config(), jax.random.key(0))
  np.testing.assert_array_equal(S, S2)
  np.testing.assert_array_equal(hist['total'], hist2['total'])
  S3, _ = discovery.discover(tiny_generator, _config(), jax.random.key(1))
  assert not np.array_equal(S, S3)


@pytest.mark.parametrize('steps_per_call', [0, 10])  # 0 = auto: one step per jitted call on CPU
def test_chunking_does_not_change_the_result(tiny_generator, tiny_run, steps_per_call):
  S, hist = tiny_run
  S2, hist2 = discovery.discover(
    tiny_generator, _config(log_every=20, steps_per_call=steps_per_call), jax.random.key(0)
  )
  # A lax.scan body and a lone step are compiled differently: float reassociation only, which Adam's
  # normalised steps amplify on near-zero gradient entries (|S| ~ 1e-2 here, differences ~ 3e-6).
  np.testing.assert_allclose(S2, S, atol=1e-7 if steps_per_call == 0 else 1e-5)
  np.testing.assert_allclose(hist2['total'], hist['total'], rtol=1e-6 if steps_per_call == 0 else 1e-4)


def test_no_retrace_across_chunks_and_calls(tiny_generator, monkeypatch):
  chex.clear_trace_counter()
  counted = jax.jit(
    chex.assert_max_traces(discovery._train_chunk_impl, n=1),
    static_argnames=('model', 'hp', 'num_steps', 'mesh'),
    donate_argnames=('state',),
  )
  monkeypatch.setattr(discovery, 'train_chunk', counted)
  cfg = _config(iterations=6, log_every=2)  # 3 chunks per call
  discovery.discover(tiny_generator, cfg, jax.random.key(0))
  discovery.discover(tiny_generator, _config(iterations=6, log_every=2), jax.random.key(5))
  chex.clear_trace_counter()


def test_one_device_equals_four_devices(tiny_generator, tiny_run):
  assert len(jax.devices()) == 4, 'conftest forces 4 CPU devices'
  S4, hist4 = tiny_run  # default mesh: all 4 devices
  S1, hist1 = discovery.discover(
    tiny_generator, _config(), jax.random.key(0), mesh=discovery.make_mesh(jax.devices()[:1])
  )
  # Same z, same math; only the all-reduce order differs, which Adam's normalised steps amplify on
  # near-zero gradient entries (|S| ~ 1e-2; different z would differ by ~1e-2).
  np.testing.assert_allclose(S1, S4, atol=1e-5)
  np.testing.assert_allclose(hist1['total'], hist4['total'], rtol=1e-4)


def test_losses_match_numpy_reference(tiny_generator):
  rng = np.random.default_rng(0)
  S = rng.normal(size=(32, 32)).astype(np.float32) * 0.05
  z = rng.normal(size=(2, 32)).astype(np.float32)
  feats = np.asarray(tiny_generator.g1(jnp.asarray(z), 3))
  decode = jax.jit(lambda f: tiny_generator.g2(f, 3))
  # Independent reference: channels as columns of F (HW x C), S with its diagonal removed.
  S0 = S.astype(np.float64) * (1 - np.eye(32))
  F = feats.astype(np.float64).reshape(2, 64, 32)
  FS = F @ S0
  X = np.asarray(decode(jnp.asarray(feats)), np.float64)
  XS = np.asarray(decode(jnp.asarray(FS.reshape(feats.shape), jnp.float32)), np.float64)
  refs = {
    'mean': (np.mean((F - FS) ** 2), np.mean((X - XS) ** 2), np.mean(np.abs(S0))),
    'sum': (np.sum((F - FS) ** 2) / 2, np.sum((X - XS) ** 2) / 2, np.sum(np.abs(S0))),
  }
  for reduction, ref in refs.items():
    hp = discovery_config.SelfExpression(lam=10.0, mu=1.0, reduction=reduction)
    total, terms = discovery.self_expressive_losses(jnp.asarray(S), jnp.asarray(feats), hp, decode)
    np.testing.assert_allclose([terms['rec_f'], terms['rec_d'], terms['l1']], ref, rtol=2e-4)
    np.testing.assert_allclose(total, ref[0] + 10 * ref[1] + ref[2], rtol=2e-4)


def test_bad_config(tiny_generator):
  with pytest.raises(
    ValueError,
    match=r'batch_size=6 must be a multiple of the number of devices in the '
    r'mesh \(4\)',
  ):
    discovery.discover(tiny_generator, _config(batch_size=6), jax.random.key(0))
  with pytest.raises(ValueError, match='config.layer must be >= 1'):
    discovery.discover(tiny_generator, _config(layer=0), jax.random.key(0))
  with pytest.raises(ValueError, match=r'layer must be an int in \[0, 6\]'):
    discovery.discover(tiny_generator, _config(layer=7), jax.random.key(0))
  with pytest.raises(ValueError, match=r"config.reduction must be one of \('mean', 'sum'\)"):
    discovery.discover(tiny_generator, _config(reduction='max'), jax.random.key(0))


@pytest.mark.parametrize(
  'array, match',
  [
    (np.zeros((64, 32), np.float32), r'must be square \(C, C\), got shape \(64, 32\)'),
    (np.full((64, 64), np.nan, np.float32), r'has 4096 NaN/Inf entries'),
    (np.zeros((32, 32), np.float32), r'is 32x32 but the generator has 64 channels at the chosen layer'),
    (np.array([{'a': 1}], dtype=object), r'not a plain .npy array'),
  ],
)
def test_load_matrix_errors(tmp_path, array, match):
  path = tmp_path / 'S.npy'
  np.save(path, array, allow_pickle=True)
  with pytest.raises(ValueError, match=match):
    subspaces.load_matrix(path, num_channels=64)


def test_load_matrix_layouts(tmp_path):
  M = np.arange(16, dtype=np.float32).reshape(4, 4)
  np.save(tmp_path / 'S.npy', M)
  paper = subspaces.load_matrix(tmp_path / 'S.npy')  # the stored diagonal kept by default
  official = subspaces.load_matrix(tmp_path / 'S.npy', layout='official')
  np.testing.assert_array_equal(paper, M)
  np.testing.assert_array_equal(official, M.T)
  zeroed = subspaces.load_matrix(tmp_path / 'S.npy', layout='official', diagonal='zero')
  np.testing.assert_array_equal(zeroed, M.T * (1 - np.eye(4, dtype=np.float32)))
  with pytest.raises(ValueError, match=r"diagonal must be one of \('keep', 'zero'\), got 'no'"):
    subspaces.load_matrix(tmp_path / 'S.npy', diagonal='no')
  with pytest.raises(FileNotFoundError, match='does not exist'):
    subspaces.load_matrix(tmp_path / 'missing.npy')


def test_train_resumes_to_the_same_result(tiny_generator, tiny_run, tmp_path):
  S_ref, hist_ref = tiny_run
  cfg = _config(iterations=10, checkpoint_every=10, seed=0)
  S_half, hist_half = discover_job.train(tiny_generator, cfg, tmp_path)
  assert len(hist_half['total']) == 10
  S, hist = discover_job.train(tiny_generator, _config(iterations=20, checkpoint_every=10, seed=0), tmp_path)
  np.testing.assert_allclose(S, S_ref, atol=1e-7)
  np.testing.assert_allclose(hist['total'], hist_ref['total'], rtol=1e-6)
  # Rerunning a finished run restores it without training.
  S_again, _ = discover_job.train(
    tiny_generator, _config(iterations=20, checkpoint_every=10, seed=0), tmp_path
  )
  np.testing.assert_array_equal(S_again, S)
  with pytest.raises(ValueError, match=r"cannot resume, the config differs .*\{'lam': \(10.0, 1.0\)\}"):
    discover_job.train(tiny_generator, _config(iterations=30, lam=1.0, seed=0), tmp_path)
  with pytest.raises(ValueError, match=r'the checkpoint is at step 20, past --iterations=10'):
    discover_job.train(tiny_generator, _config(iterations=10, seed=0), tmp_path)


def test_sigterm_saves_and_the_rerun_finishes_identically(tiny_generator, tiny_run, tmp_path, monkeypatch):
  S_ref, hist_ref = tiny_run
  original = discovery.train_chunk
  calls = []

  def chunk_then_sigterm(*args, **kwargs):
    out = original(*args, **kwargs)
    calls.append(1)
    if len(calls) == 1:
      os.kill(os.getpid(), signal.SIGTERM)  # as a cluster scheduler would, mid-run
    return out

  monkeypatch.setattr(discovery, 'train_chunk', chunk_then_sigterm)
  with pytest.raises(SystemExit) as exc:
    discover_job.train(tiny_generator, _config(checkpoint_every=100, seed=0), tmp_path)
  # The signal lands during the first call of the first chunk (log_every=10 steps): the job stops after
  # that call, not at the end of the chunk, and saves that step (not at checkpoint_every).
  per_call = loops.steps_per_call(0, 10)
  assert exc.value.code == 143 and len(calls) == 1
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit()) == [str(per_call)]
  monkeypatch.setattr(discovery, 'train_chunk', original)
  S, hist = discover_job.train(tiny_generator, _config(checkpoint_every=100, seed=0), tmp_path)
  np.testing.assert_allclose(S, S_ref, atol=1e-7)
  np.testing.assert_allclose(hist['total'], hist_ref['total'], rtol=1e-6)


def test_subspace_directory_roundtrip_and_errors(tmp_path):
  S = clustering.zero_diagonal(np.random.default_rng(0).normal(size=(12, 12))).astype(np.float32)
  labels = np.array([0, 1, 2, 0, 1, 0, 0, 1, 2, 0, 1, 0])
  hist = {'total': np.arange(3, dtype=np.float32)}
  subspaces.write_subspaces(tmp_path / 'sub', S, labels, 3, layer=3, history=hist, meta={'seed': 1})
  sub = subspaces.load_subspaces(tmp_path / 'sub')
  assert sub.layer == 3 and sub.num_subspaces == 3 and sub.num_channels == 12 and sub.meta['seed'] == 1
  np.testing.assert_array_equal(sub.masks, clustering.masks_from_labels(labels, 3))
  np.testing.assert_array_equal(sub.labels, labels)
  np.testing.assert_array_equal(sub.S, S)
  # Without the .npy files it falls back to the orbax result/ checkpoint.
  for name in ('S.npy', 'masks.npy', 'labels.npy'):
    (tmp_path / 'sub' / name).unlink()
  sub2 = subspaces.load_subspaces(tmp_path / 'sub')
  np.testing.assert_array_equal(sub2.masks, sub.masks)
  np.testing.assert_array_equal(sub2.S, S)
  # Broken directories.
  np.save(tmp_path / 'sub' / 'masks.npy', np.ones((3, 12), bool))
  with pytest.raises(ValueError, match='channel 0 is in 3 subspaces'):
    subspaces.load_subspaces(tmp_path / 'sub')
  with pytest.raises(FileNotFoundError, match='is not a subspace directory: missing'):
    subspaces.load_subspaces(tmp_path)
  with pytest.raises(FileNotFoundError, match="'nonexistent_model' is neither a directory nor a shipped"):
    subspaces.load_subspaces('nonexistent_model')


def test_exchange_grid_swaps_exactly_the_subspace_channels(tiny_generator):
  f = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 2, 5)), jnp.float32)
  mask = jnp.asarray([True, False, True, False, False])
  mixed = np.asarray(editing.exchange_features(f[:, None], f[None, :], mask))
  for i in range(3):
    for j in range(3):
      np.testing.assert_array_equal(mixed[i, j][..., [0, 2]], np.asarray(f[j])[..., [0, 2]])
      np.testing.assert_array_equal(mixed[i, j][..., [1, 3, 4]], np.asarray(f[i])[..., [1, 3, 4]])
  # Diagonal of a real grid = the generated samples themselves.
  z = jax.random.normal(jax.random.key(0), (2, 32))
  grid = plots.exchange_grid(tiny_generator, 3, np.arange(32) < 8, z, min_cell=16)
  np.testing.assert_allclose(grid[:16, :16], np.clip(np.asarray(tiny_generator(z))[0], -1, 1), atol=1e-5)
  np.testing.assert_allclose(grid[18:, 18:], np.clip(np.asarray(tiny_generator(z))[1], -1, 1), atol=1e-5)
