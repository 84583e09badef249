"""Mixed precision (``model.compute_dtype``) and rematerialisation (``job.remat``) of the inversion step.

bf16: activations of G1 / G2 / VGG in bfloat16, params, codes, weights, optimizer state and the loss in
float32 (core/objective.py: compute_dtype). remat: one jax.checkpoint per G2 block (models/pggan.py: g2).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmsfc_jax.core import config
from pmsfc_jax.core import inversion
from pmsfc_jax.core import presets
from pmsfc_jax.io import pretrained
from pmsfc_jax.jobs.invert import fingerprint
from pmsfc_jax.models import pggan
from pmsfc_jax.models import vgg

STEPS = 12
# Measured on CPU (jax 0.10.2): the bf16 losses differ from f32 by at most 1.1% over these 12 steps (first
# loss 0.5082 vs 0.5071, last 0.2236 vs 0.2260). The bound leaves ~3x room; the run must still descend.
BF16_LOSS_RTOL = 0.03


def _cfg(**overrides):
  cfg = presets.invert('pmsfc,fast')
  base = {'optim.iterations': STEPS, 'loss.perceptual.resize': None, 'method.num_codes': 2}
  return config.override(cfg, {**base, **overrides})


@pytest.fixture(scope='module')
def problem(tiny_generator):
  gen = tiny_generator
  c = pggan.feature_shape(gen.config, 3)[-1]
  masks = np.stack([np.arange(c) % 3 == r for r in range(3)])
  targets = gen(jax.random.normal(jax.random.key(5), (2, gen.config.z_dim)))
  percep = pretrained.load_perceptual(config.PerceptualConfig(resize=None))
  return gen, percep, targets, masks


def _run(problem, cfg):
  gen, percep, targets, masks = problem
  state = inversion.init_state(gen, percep, targets, masks, cfg, jax.random.key(1))
  return inversion.run_steps(gen, percep, state, targets, masks, cfg, STEPS)


def test_bf16_step_runs_on_cpu_and_tracks_f32(problem):
  f32 = _run(problem, _cfg())
  bf16 = _run(problem, _cfg(**{'model.compute_dtype': 'bfloat16'}))
  h32, h16 = np.asarray(f32.loss_history), np.asarray(bf16.loss_history)
  assert np.all(np.isfinite(h16))
  np.testing.assert_allclose(h16, h32, rtol=BF16_LOSS_RTOL)
  assert np.all(h16[:, -1] < 0.9 * h16[:, 0]), 'bf16 inversion does not descend'
  # The optimisation state stays float32 (Adam updates would vanish on bf16 codes).
  for leaf in jax.tree.leaves((bf16.codes, bf16.weights, bf16.opt_state, bf16.loss_history)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32, leaf.dtype
  assert not np.array_equal(np.asarray(bf16.codes), np.asarray(f32.codes)), 'bf16 had no effect'


def _convolutions(problem, cfg):
  """Operand dtypes of the convolutions in the lowered step program (StableHLO text)."""
  gen, percep, targets, masks = problem
  state = inversion.init_state(gen, percep, targets, masks, cfg, jax.random.key(1))
  x, tfeat = inversion._objective_jit(percep, jnp.asarray(targets), None, cfg)
  text = inversion.run_steps_jit.lower(
    gen, percep, state, x, tfeat, masks=jnp.asarray(masks, jnp.float32), known=None, cfg=cfg, num_steps=1
  ).as_text()
  lines = [l for l in text.splitlines() if 'stablehlo.convolution' in l]
  return ['bf16' if 'bf16>' in l.rsplit('->', 1)[0].rsplit(':', 1)[-1] else 'f32' for l in lines]


def test_bf16_convolutions_run_in_bf16(problem):
  f32 = _convolutions(problem, _cfg())
  bf16 = _convolutions(problem, _cfg(**{'model.compute_dtype': 'bfloat16'}))
  assert f32 and set(f32) == {'f32'}
  # G1, G2, VGG and their data gradients: every convolution of the step runs on bf16 operands.
  assert len(bf16) == len(f32) and set(bf16) == {'bf16'}


def test_remat_gives_the_same_results_and_checkpoints_g2(problem):
  plain = _run(problem, _cfg())
  remat = _run(problem, _cfg(**{'job.remat': True}))
  # Measured: identical on CPU (the recomputed forward is the same program); float rounding allowed.
  np.testing.assert_allclose(np.asarray(remat.loss_history), np.asarray(plain.loss_history), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(remat.codes), np.asarray(plain.codes), rtol=1e-4, atol=1e-6)
  gen = problem[0]
  f = jnp.zeros((1,) + pggan.feature_shape(gen.config, 3))

  def checkpoints(remat):
    jaxpr = jax.make_jaxpr(jax.grad(lambda x: jnp.sum(gen.g2(x, 3, remat=remat))))(f).jaxpr
    # jax.checkpoint's primitive: 'remat2' (jax 0.10) / 'checkpoint'; in the backward pass of a grad.
    return sum(e.primitive.name in ('remat2', 'remat', 'checkpoint') for e in jaxpr.eqns)

  # One checkpoint per block after layer 3: 8x8 (layer 4), 16x16, 32x32 + ToRGB.
  assert checkpoints(True) == gen.config.resolution_log2 - 2
  assert checkpoints(False) == 0


def test_bf16_vgg_under_jit_matches_float32(problem):
  """Guards the ReLU-after-pool order of models/vgg.py: XLA:CPU of jaxlib 0.12.0.1 turns bf16 conv -> ReLU
  -> conv -> ReLU -> max-pool in one jitted program into NaN / 1e38 garbage (jax 0.10.2 does not)."""
  percep, images = problem[1], problem[2]
  feats = jax.jit(vgg.features, static_argnums=(2, 3, 4, 5))
  f32 = np.asarray(feats(percep.params, images, 'relu3_3', None, 'nearest', jnp.float32))
  bf16 = np.asarray(feats(percep.params, images, 'relu3_3', None, 'nearest', jnp.bfloat16))
  assert np.all(np.isfinite(bf16))
  # Measured: relative L2 error 2.7e-3 (bf16 has an 8-bit mantissa); 10x room.
  assert np.linalg.norm(bf16 - f32) / np.linalg.norm(f32) < 0.03


@pytest.mark.parametrize('layer', [2, 3, 4, 8])
def test_remat_g2_equals_g2_at_every_split(tiny_generator, layer):
  gen = tiny_generator
  f = jax.random.normal(jax.random.key(layer), (2,) + pggan.feature_shape(gen.config, layer))
  np.testing.assert_allclose(
    np.asarray(gen.g2(f, layer, remat=True)), np.asarray(gen.g2(f, layer)), rtol=1e-6, atol=1e-6
  )


def test_compute_dtype_is_checked(tiny_generator):
  with pytest.raises(config.ConfigError, match='model.compute_dtype'):
    config.override(config.InvertConfig(), {'model.compute_dtype': 'float16'})


@pytest.mark.parametrize(
  'key,new',
  [('model.compute_dtype', 'bfloat16'), ('loss.pixel_mean', 'all'), ('loss.degraded_perceptual', False)],
)
def test_later_settings_are_fingerprinted_only_when_set(tiny_generator, key, new):
  section, name = key.split('.')
  assert fingerprint.LATER_SETTINGS[(section, name)] != new
  payload = lambda **o: fingerprint.payload(
    config.override(config.InvertConfig(), {'task.name': 'inpaint', **o}), tiny_generator, None, None
  )
  default, changed = payload(), payload(**{key: new})
  # Output folders written before the setting existed keep their fingerprint (they computed the old way).
  assert name not in default['config'][section]
  assert changed['config'][section][name] == new
  assert fingerprint.digest(changed) != fingerprint.digest(default)
  assert payload(**{'job.remat': True}) == default  # job settings do not change results (tested above)


def test_soft_inpainting_masks_are_fingerprinted_by_their_weighting(tiny_generator):
  """Soft masks changed from k^3 to mGANprior's k^2 weights (issue #13): their folders get a new
  fingerprint; binary masks (every weighting equal) keep theirs."""
  cfg = config.override(config.InvertConfig(), {'task.name': 'inpaint'})
  binary = np.zeros((32, 32, 1), np.float32)
  binary[8:] = 1
  soft = binary * 0.5
  assert 'soft_mask_weighting' not in fingerprint.payload(cfg, tiny_generator, None, binary)
  assert fingerprint.payload(cfg, tiny_generator, None, soft)['soft_mask_weighting'] == 'k^2'
