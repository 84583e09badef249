"""Training of the demo PGGAN (issue #7): discriminator pieces, losses go down, resume == uninterrupted."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmsfc_jax.core import config
from pmsfc_jax.core import gan as training
from pmsfc_jax.core import presets
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import datasets as data_lib
from pmsfc_jax.io import images as imageio
from pmsfc_jax.jobs import train_pggan
from pmsfc_jax.models import discriminator as disc
from pmsfc_jax.models import pggan

RES = 16
G_CFG = pggan.GeneratorConfig(resolution=RES, z_dim=32, fmaps_base=256, fmaps_max=16)
D_CFG = disc.DiscriminatorConfig.for_generator(G_CFG)
HP = training.GanOptim(batch_size=8, r1_every=2, r1_gamma=0.1, ema_half_life_kimg=0.05)


def _mbstd_reference(x, group_size):
  """Independent loop version of TF's minibatch_stddev_layer (one feature), NHWC."""
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  g = min(group_size, n)
  m = n // g
  out = np.empty((n,))
  for j in range(m):  # TF reshape [G, M, ...]: group j holds samples j, j + M, j + 2M, ...
    members = x[j::m]
    std = np.sqrt(members.var(axis=0) + 1e-8)
    out[j::m] = std.mean()
  return out


@pytest.fixture(scope='module')
def faces(photo_folder):
  paths = data_lib.numbered_paths(photo_folder, 1, 16)
  return data_lib.load_images(paths, RES)


class TestDiscriminator:
  @pytest.mark.parametrize('n,group', [(8, 4), (6, 2), (3, 4)])
  def test_minibatch_stddev_matches_reference(self, n, group):
    x = jax.random.normal(jax.random.key(n), (n, 4, 4, 5)) * jnp.arange(1, n + 1)[:, None, None, None]
    y = disc.minibatch_stddev(x, group)
    assert y.shape == (n, 4, 4, 6)
    np.testing.assert_array_equal(np.asarray(y[..., :5]), np.asarray(x))
    # The extra channel is constant over H, W and equals the reference per sample.
    np.testing.assert_allclose(
      np.asarray(y[..., 5]), np.broadcast_to(_mbstd_reference(x, group)[:, None, None], (n, 4, 4)), rtol=1e-5
    )

  def test_minibatch_stddev_groups_are_independent_and_identical_batch_is_eps(self):
    x = jax.random.normal(jax.random.key(0), (8, 4, 4, 3))
    y0 = disc.minibatch_stddev(x, 4)[..., -1]
    x2 = x.at[1].multiply(10.0)  # sample 1 is in group 1 = {1, 3, 5, 7} (M = 2)
    y1 = disc.minibatch_stddev(x2, 4)[..., -1]
    np.testing.assert_array_equal(np.asarray(y1[0::2]), np.asarray(y0[0::2]))
    assert np.all(np.asarray(y1[1::2]) > np.asarray(y0[1::2]))
    same = jnp.broadcast_to(x[:1], x.shape)
    np.testing.assert_allclose(np.asarray(disc.minibatch_stddev(same, 4)[..., -1]), 1e-4, rtol=1e-3)

  def test_minibatch_stddev_rejects_indivisible_batch(self):
    with pytest.raises(ValueError, match='batch size 6 is not divisible by the group size 4'):
      disc.minibatch_stddev(jnp.zeros((6, 4, 4, 2)), 4)

  def test_layout_and_logits(self):
    params = disc.init_params(D_CFG, jax.random.key(0))
    shapes = {'/'.join(k.key for k in p): v.shape for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert shapes['FromRGB/weight'] == (1, 1, 3, 16)
    assert shapes['16x16_Conv1/weight'] == (3, 3, 16, 16)
    assert shapes['4x4_Conv/weight'] == (3, 3, 17, 16)  # + the minibatch stddev channel
    assert shapes['4x4_Dense0/weight'] == (16 * 16, 16)
    assert shapes['4x4_Dense1/weight'] == (16, 1)
    logits = disc.discriminate(D_CFG, params, jnp.zeros((4, RES, RES, 3)))
    assert logits.shape == (4,)
    with pytest.raises(
      ValueError, match=r'discriminator expects images \(N, 16, 16, 3\), got \(4, 8, 8, 3\)'
    ):
      disc.discriminate(D_CFG, params, jnp.zeros((4, 8, 8, 3)))


def test_r1_penalty_matches_closed_form():
  # D(x) = sum(a * x) per sample: grad = a, so R1 = sum(a^2).
  a = jax.random.normal(jax.random.key(1), (1, 4, 4, 3))
  x = jax.random.normal(jax.random.key(2), (5, 4, 4, 3))
  r1 = training.r1_penalty(lambda t: jnp.sum(a * t, axis=(1, 2, 3)), x)
  np.testing.assert_allclose(float(r1), float(jnp.sum(a**2)), rtol=1e-5)


def test_ema_beta_half_life():
  hp = training.GanOptim(batch_size=10, ema_half_life_kimg=1.0, ema_rampup=0.0)
  beta = float(training.ema_beta(jnp.asarray(5), hp))
  np.testing.assert_allclose(beta**100, 0.5, rtol=1e-5)  # 100 steps x 10 images = 1 kimg


def test_training_steps_decrease_losses(faces):
  """After k steps, D separates (reals, initial fakes) better, and G_k fools D_k better than G_0."""
  state0 = training.create_train_state(G_CFG, D_CFG, HP, seed=0)
  images = jnp.asarray(faces)
  reals = images[:8].astype(jnp.float32) / 127.5 - 1
  z = jax.random.normal(jax.random.key(42), (8, G_CFG.z_dim))
  fakes0 = pggan.generate(G_CFG, state0.g_params, z)
  d_loss0 = float(training.d_loss_on_batch(D_CFG, state0.d_params, reals, fakes0))
  g0_params = jax.tree.map(jnp.copy, state0.g_params)
  state, metrics = training.make_train_fn(G_CFG, D_CFG, HP, 12)(state0, images)
  assert int(state.step) == 12
  assert metrics['d_loss'].shape == (12,)
  r1 = np.asarray(metrics['r1'])
  assert np.isfinite(r1[0::2]).all() and np.isnan(r1[1::2]).all()  # R1 on steps 0 mod r1_every
  d_loss_k = float(training.d_loss_on_batch(D_CFG, state.d_params, reals, fakes0))
  assert d_loss_k < d_loss0 - 0.05, (d_loss0, d_loss_k)
  logits_g0 = disc.discriminate(D_CFG, state.d_params, pggan.generate(G_CFG, g0_params, z))
  logits_gk = disc.discriminate(D_CFG, state.d_params, pggan.generate(G_CFG, state.g_params, z))
  g_loss0 = float(training.g_nonsaturating_loss(logits_g0))
  g_loss_k = float(training.g_nonsaturating_loss(logits_gk))
  assert g_loss_k < g_loss0, (g_loss0, g_loss_k)
  # The EMA moved from G_0 towards G_k but is neither.
  for e, pk in zip(jax.tree.leaves(state.g_ema), jax.tree.leaves(state.g_params)):
    assert e.shape == pk.shape
  assert not np.allclose(np.asarray(state.g_ema['ToRGB']['weight']), np.asarray(g0_params['ToRGB']['weight']))
  assert not np.allclose(
    np.asarray(state.g_ema['ToRGB']['weight']), np.asarray(state.g_params['ToRGB']['weight'])
  )


def _tiny_config(folder, total_steps):
  return training.TrainConfig(
    seed=3,
    data=training.Data(folder=str(folder), first=1, last=16, cache=True),
    model=training.GanModel(generator=G_CFG, mbstd_group_size=4),
    optim=HP,
    job=training.TrainJob(
      total_steps=total_steps,
      steps_per_call=2,
      log_every=2,
      sample_every=2,
      checkpoint_every=2,
      keep_checkpoints=2,
      num_samples=4,
      sample_seed=0,
    ),
  )


def test_resume_equals_uninterrupted_and_export(photo_folder, tmp_path, monkeypatch):
  get, waits, block, blocked = jax.device_get, [], jax.block_until_ready, []
  monkeypatch.setattr(jax, 'device_get', lambda x: waits.append(1) or get(x))
  monkeypatch.setattr(jax, 'block_until_ready', lambda x: blocked.append(1) or block(x))
  full = train_pggan.train(_tiny_config(photo_folder, 6), str(tmp_path / 'full'))
  # The loop never waits on the device every step (issue 19): 6 steps in windows of 2 with a checkpoint
  # after each, one device read per metrics window and one per checkpoint save (before: one more per step,
  # 12 in all); loops.InFlight waits for all but the last dispatched step (the host stays one step ahead).
  assert (len(waits), len(blocked)) == (3 + 3, 5), (len(waits), len(blocked))
  monkeypatch.undo()
  train_pggan.train(_tiny_config(photo_folder, 2), str(tmp_path / 'split'))  # "killed" after step 2
  resumed = train_pggan.train(_tiny_config(photo_folder, 6), str(tmp_path / 'split'))
  assert int(full.step) == int(resumed.step) == 6
  chex.assert_trees_all_equal(full, resumed)
  rows = [json.loads(l) for l in (tmp_path / 'full' / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == [2, 4, 6]
  assert all(np.isfinite(r['d_loss']) and np.isfinite(r['g_loss']) for r in rows)
  assert (tmp_path / 'full' / 'samples' / 'ema_0000006.png').exists()
  assert (tmp_path / 'full' / 'data_16.npy').exists()
  # Export: the EMA generator, loadable like any converted checkpoint, with the training record.
  out = train_pggan.export_generator(
    _tiny_config(photo_folder, 6), str(tmp_path / 'full'), str(tmp_path / 'gen')
  )
  g = checkpoints.load_generator(out)
  assert g.config == G_CFG
  chex.assert_trees_all_close(g.params, jax.device_get(full.g_ema))
  from orbax import checkpoint as ocp

  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ck:
    meta = ck.restore(out.absolute(), args=ocp.args.Composite(config=ocp.args.JsonRestore()))['config'][
      'meta'
    ]
  assert meta['steps'] == 6 and meta['images_seen'] == 6 * HP.batch_size and meta['wall_seconds'] > 0


def test_config_errors():
  with pytest.raises(
    ValueError,
    match=r'config.job.total_steps=5 must be a positive multiple of '
    r'config.job.steps_per_call=2',
  ):
    train_pggan.train({'job': {'total_steps': 5, 'steps_per_call': 2}}, '/nonexistent/never_written')
  with pytest.raises(ValueError, match=r"unknown config key 'optim.learning_rat'"):
    config.parse(training.TrainConfig, {'optim': {'learning_rat': 1e-3}})


def test_launch_configs_build():
  for arg in (None, 'local'):
    g, d = training.networks(presets.train_pggan(arg))
    assert g.resolution == 32 and g.z_dim == 512 and pggan.feature_shape(g, 3)[-1] >= 64
    assert d.nf(32) == g.nf(32)
  with pytest.raises(ValueError, match="unknown config variant 'big'"):
    presets.train_pggan('big')


def test_load_images_uses_pipeline_and_cache(photo_folder, tmp_path):
  paths = data_lib.numbered_paths(photo_folder, 1, 3)
  cache = tmp_path / 'c.npy'
  arr = data_lib.load_images(paths, 16, cache=cache)
  assert arr.dtype == np.uint8 and arr.shape == (3, 16, 16, 3)
  np.testing.assert_array_equal(arr[2], imageio.to_uint8(imageio.load_image(paths[2], size=16)))
  # A doctored cache is trusted when its description matches, rebuilt when it does not.
  np.save(cache, np.zeros_like(arr))
  assert data_lib.load_images(paths, 16, cache=cache).max() == 0
  np.testing.assert_array_equal(data_lib.load_images(paths[:2], 16, cache=cache), arr[:2])
  with pytest.raises(FileNotFoundError, match='000001.jpg does not exist'):
    data_lib.numbered_paths(tmp_path, 1, 9)
