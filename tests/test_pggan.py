"""Flax PGGAN: layer table, G1/G2 split, jit/vmap behaviour, the fused upsampling conv in isolation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmsfc_jax.models import pggan

FUSED_CFG = pggan.GeneratorConfig(resolution=16, z_dim=24, fmaps_base=256, fmaps_max=16, fused_scale=True)


def _z(n, z_dim, seed=0):
  return np.random.default_rng(seed).standard_normal((n, z_dim)).astype(np.float32)


def test_official_layer_table_and_shapes():
  cfg = pggan.GeneratorConfig()  # CelebA-HQ 1024: fmaps 16384 / 512, z 512
  assert cfg.num_layers == 18
  shapes = pggan.feature_shapes(cfg)
  assert shapes[0] == (512,)
  assert shapes[1] == shapes[2] == (4, 4, 512)
  assert shapes[3] == shapes[4] == (8, 8, 512)  # layer 3: the first 8x8 conv, PmSFC's layer
  assert shapes[11] == (128, 128, 128) and shapes[18] == (1024, 1024, 16)
  names = [(s.block, s.name) for s in pggan.layer_table(cfg)]
  assert names[:4] == [('4x4', 'Dense'), ('4x4', 'Conv'), ('8x8', 'Conv0'), ('8x8', 'Conv1')]
  ps = pggan.param_shapes(cfg)
  assert ps['4x4/Dense/weight'] == (512, 8192) and ps['4x4/Dense/bias'] == (512,)
  assert ps['64x64/Conv0/weight'] == (3, 3, 512, 256) and ps['1024x1024/Conv1/weight'] == (3, 3, 16, 16)
  assert ps['ToRGB/weight'] == (1, 1, 16, 3) and len(ps) == 2 * 18 + 2
  # 23.1M parameters as the paper's Table 2 (without the unused lower-resolution ToRGB layers).
  assert sum(int(np.prod(s)) for s in ps.values()) == pytest.approx(23.07e6, rel=2e-3)
  auto = pggan.param_shapes(pggan.GeneratorConfig(resolution=256, fused_scale='auto'))
  assert (
    '64x64/Conv0/weight' in auto and '128x128/Conv0_up/weight' in auto and '256x256/Conv0_up/weight' in auto
  )


@pytest.mark.parametrize('bad', [-1, 9, 1.5, '3'])
def test_bad_layer_named(tiny_generator, bad):
  with pytest.raises(ValueError, match=r'layer must be an int in \[0, 8\] for a 32x32 generator'):
    tiny_generator.g1(_z(1, 64), bad)


def test_bad_shapes_named(tiny_generator):
  with pytest.raises(ValueError, match=r'latents must have shape \(B, 64\), got \(2, 63\)'):
    tiny_generator(_z(2, 63))
  with pytest.raises(
    ValueError, match=r'G2 at layer 3 expects features of shape \(B, 8, 8, 64\), got \(2, 4, 4, 64\)'
  ):
    tiny_generator.g2(jnp.zeros((2, 4, 4, 64)), 3)


@pytest.mark.parametrize('which', ['tiny', 'fused'])
def test_g2_of_g1_equals_g_for_every_layer(which, tiny_generator):
  gen = (
    tiny_generator
    if which == 'tiny'
    else pggan.Generator(FUSED_CFG, pggan.init_params(FUSED_CFG, jax.random.key(3)))
  )
  z = _z(2, gen.config.z_dim)
  full = np.asarray(gen(z))
  assert full.shape == (2, gen.config.resolution, gen.config.resolution, 3) and np.std(full) > 0.1
  for layer in range(gen.config.num_layers + 1):
    feats = gen.g1(z, layer)
    assert feats.shape == (2, *gen.feature_shape(layer))
    np.testing.assert_allclose(gen.g2(feats, layer), full, atol=1e-5, err_msg=f'layer {layer}')
  if which == 'tiny':  # features are post-activation (LeakyReLU 0.2): negatives are 0.2x scaled
    np.testing.assert_allclose(gen.g1(z, 0), z)


def test_jit_traces_once_per_shape(tiny_generator):
  cfg = tiny_generator.config
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=2)
  def g(params, z):
    return pggan.generate(cfg, params, z)

  a = g(tiny_generator.params, _z(2, 64, 0))
  b = g(tiny_generator.params, _z(2, 64, 1))  # same shape: no retrace
  assert not np.allclose(a, b)
  g(tiny_generator.params, _z(3, 64, 0))  # new batch size: the second (and last allowed) trace
  g(tiny_generator.params, _z(3, 64, 2))
  with pytest.raises(AssertionError, match='retrac|trace'):
    g(tiny_generator.params, _z(4, 64, 0))

  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def split(gen, z):
    return gen.g2(gen.g1(z, 3), 3)

  s1 = split(tiny_generator, _z(2, 64, 0))
  split(tiny_generator, _z(2, 64, 5))  # the Generator pytree crosses jit; config is static
  np.testing.assert_allclose(s1, a, atol=1e-5)


def test_g1_g2_under_vmap(tiny_generator):
  z = _z(4, 64)
  layer = 3

  @jax.jit
  def run(gen, z):
    feats = jax.vmap(lambda zi: gen.g1(zi[None], layer)[0])(z)  # per-example G1
    images = jax.vmap(lambda fi: gen.g2(fi[None], layer)[0])(feats)  # per-example G2
    codes = jax.vmap(lambda zz: gen.g1(zz, layer))(z.reshape(2, 2, 64))  # leading "codes" axis
    return feats, images, codes

  feats, images, codes = run(tiny_generator, z)
  np.testing.assert_allclose(feats, tiny_generator.g1(z, layer), atol=1e-5)
  np.testing.assert_allclose(images, tiny_generator(z), atol=1e-5)
  np.testing.assert_allclose(codes.reshape(4, 8, 8, 64), feats, atol=1e-5)


def _tf_conv2d_transpose_same_stride2(x, w_tf):
  """NumPy scatter form of tf.nn.conv2d_transpose(x NHWC, w [k,k,out,in], stride 2, 'SAME') -> 2H x 2W."""
  n, h, wd, cin = x.shape
  k = w_tf.shape[0]
  pad = (k - 2) // 2  # SAME for output 2H, kernel k, stride 2: total padding k - 2, split low first
  out = np.zeros((n, 2 * h + k, 2 * wd + k, w_tf.shape[2]), np.float64)
  for a in range(h):
    for b in range(wd):
      out[:, 2 * a : 2 * a + k, 2 * b : 2 * b + k, :] += np.einsum('ni,yxoi->nyxo', x[:, a, b, :], w_tf)
  return out[:, pad : pad + 2 * h, pad : pad + 2 * wd, :]


def test_fused_upsample_conv_matches_tf_upscale2d_conv2d():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
  kernel = rng.standard_normal((3, 3, 3, 6)).astype(np.float32)  # HWIO [3, 3, in, out]
  # TF upscale2d_conv2d: weight [k,k,out,in], zero-pad to 5x5, sum the 4 shifts -> 4x4, conv2d_transpose.
  w_tf = np.pad(kernel.transpose(0, 1, 3, 2), ((1, 1), (1, 1), (0, 0), (0, 0)))
  w_tf = w_tf[1:, 1:] + w_tf[:-1, 1:] + w_tf[1:, :-1] + w_tf[:-1, :-1]
  want = _tf_conv2d_transpose_same_stride2(x.astype(np.float64), w_tf.astype(np.float64))
  got = pggan.fused_upsample_conv(jnp.asarray(x), jnp.asarray(kernel))
  assert got.shape == (2, 10, 8, 6)
  np.testing.assert_allclose(got, want, atol=1e-4)
  # Equivalently (everywhere, borders included): nearest 2x upsampling, then a 3x3 'SAME' correlation with
  # the spatially flipped kernel (conv2d_transpose is the adjoint of a correlation).
  sep = jax.lax.conv_general_dilated(
    pggan.upsample_nearest_2x(jnp.asarray(x)),
    jnp.asarray(kernel[::-1, ::-1]),
    (1, 1),
    'SAME',
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )
  np.testing.assert_allclose(got, sep, atol=1e-4)


def test_pixel_norm():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 5, 5, 7)), jnp.float32) * 10
  y = pggan.pixel_norm(x)
  np.testing.assert_allclose(jnp.mean(y**2, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(pggan.pixel_norm(jnp.zeros((1, 4))), 0.0)
