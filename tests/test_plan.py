"""launch.plan: the jobs' steps compiled ahead of time for TPU topologies (no TPU needed; libtpu is).

Tiny configs (32x32 PGGAN, 32 channels, z 16; PmSFC R=4, K=2 at layer 3; VGG16 relu3_3 on the 32x32
images) on v5e:2x2 (4 chips, 1 host) and v5e:4x4 (16 chips, 4 hosts). The tests that compile for a
TPU skip, naming the reason, only where libtpu is not installed (.ci/run installs it); the search, the
counting and the "plan compiles what the job runs" checks run everywhere.
"""

import importlib.util
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmsfc_jax.core import config
from pmsfc_jax.core import inversion
from pmsfc_jax.core import mesh as mesh_lib
from pmsfc_jax.core import presets
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import pretrained
from pmsfc_jax.jobs import aot
from pmsfc_jax.jobs import chips
from pmsfc_jax.jobs import fit
from pmsfc_jax.jobs import plan
from pmsfc_jax.models import pggan
from tests.conftest import REPO

ARCH = dict(z_dim=16, fmaps_base=256, fmaps_max=16, fused_scale=False)
RES, LAYER, R, K, ITERS = 16, 3, 4, 2, 8
CFG = config.override(
  presets.invert('pmsfc'),
  {'method.num_codes': K, 'loss.perceptual.resize': None, 'optim.iterations': ITERS, 'model.layer': LAYER},
)
needs_libtpu = pytest.mark.skipif(
  importlib.util.find_spec('libtpu') is None,
  reason="libtpu is not installed (pip install -e '.[tpu]'; .ci/run installs it): TPU topologies need it",
)
_PLANS = {}


def _plan(topology, batch, programs=('inversion', 'discovery'), mesh=config.Job.mesh, **kw):
  """plan.plan of the tiny config (by default on the batch job's multi-host default mesh), cached per
  arguments (each compile takes seconds)."""
  key = (topology, batch, programs, mesh, tuple(sorted(kw.items())))
  if key not in _PLANS:
    _PLANS[key] = plan.plan(
      CFG,
      topology,
      resolution=RES,
      arch=ARCH,
      batch_size=batch,
      num_subspaces=R,
      inversion_mesh=mesh,
      programs=programs,
      **kw,
    )
  return _PLANS[key]


# ------------------------------------------------------------------------------------------------
# An analytic count of the convolutions, written from the architectures (not from the code under test):
# 2 * (multiply-adds) per conv output tap, SAME padding taps left out as XLA counts them:
# (3H-2)(3W-2) taps per 3x3 conv over an HxW map instead of 9HW.


def _conv3x3(h, cin, cout):
  return 2 * (3 * h - 2) ** 2 * cin * cout


def _nf(res):
  return min(ARCH['fmaps_base'] // res, ARCH['fmaps_max'])


def _g1(layer):
  """Dense 4x4 (layer 1), 4x4 conv (2), then two 3x3 convs per resolution (the first after a 2x upsample)."""
  f = 2 * ARCH['z_dim'] * 16 * _nf(4)
  convs = [(4, _nf(4), _nf(4))]
  res, cin = 8, _nf(4)
  while res <= RES:
    convs += [(res, cin, _nf(res)), (res, _nf(res), _nf(res))]
    cin, res = _nf(res), res * 2
  return f + sum(_conv3x3(*c) for c in convs[: layer - 1]), convs


def _g2(layer):
  _, convs = _g1(layer)
  return sum(_conv3x3(*c) for c in convs[layer - 1 :]) + 2 * RES * RES * _nf(RES) * 3  # + 1x1 ToRGB


def _vgg_relu3_3(h):
  return (
    _conv3x3(h, 3, 64)
    + _conv3x3(h, 64, 64)
    + _conv3x3(h // 2, 64, 128)
    + _conv3x3(h // 2, 128, 128)
    + (_conv3x3(h // 4, 128, 256) + 2 * _conv3x3(h // 4, 256, 256))
  )


def analytic_inversion_flops():
  """Per image and step: G1 of the R*K codes, the composition, G2, V(estimate); x2 for the data-gradient
  backward (generator and VGG weights are constants: no weight gradients)."""
  c = _nf(8)
  forward = R * K * _g1(LAYER)[0] + 2 * R * K * 8 * 8 * c + _g2(LAYER) + _vgg_relu3_3(RES)
  return 2 * forward


def analytic_discovery_flops():
  """Per latent: G1, G2(F) (the target image), G2(F S) forward and data backward, F S and dS = F^T dR."""
  c = _nf(8)
  fs = 2 * 8 * 8 * c * c
  return _g1(LAYER)[0] + 3 * _g2(LAYER) + 2 * fs


# ------------------------------------------------------------------------------------------------
# TPU topologies.


@needs_libtpu
def test_v5e_2x2_plan_compiles_and_reports():
  p = _plan('v5e:2x2', 1, mesh='host')  # one host: the same programs as the global mesh (cached)
  assert (p['topology'], p['chips'], p['hosts'], p['device_kind']) == ('v5e:2x2', 4, 1, 'TPU v5 lite')
  assert p['per_chip_batch'] == 1 and p['job_batch_size_per_host'] == 4 == p['job_batch_size']
  chip = chips.by_device_kind('TPU v5 lite')
  for name in ('inversion', 'discovery'):
    r = p[name]
    assert r['hbm_capacity_bytes'] == chip.hbm_bytes == int(15.75 * 2**30)  # libtpu's available HBM
    assert 0 < r['hbm_bytes_per_chip'] < r['hbm_capacity_bytes'] and r['fits_with_headroom']
    assert r['flops_per_step_per_image'] > 0 and r['compile_seconds'] >= 0
    assert set(r['collectives']) == {*aot.COLLECTIVES, 'total'}
  inv = p['inversion']
  assert inv['mesh_devices'] == 4 and inv['global_batch'] == 4 and inv['steps_per_call'] == ITERS
  seconds = inv['flops_per_step_per_image'] * ITERS / (chip.peak_bf16_flops * plan.DEFAULT_FRACTION_OF_PEAK)
  assert inv['predicted_seconds_per_image'] == pytest.approx(seconds)
  assert inv['images_per_hour'] == pytest.approx(4 * 3600 / seconds)
  assert '| inversion | 1 |' in plan.table(p) and '| discovery | 1 |' in plan.table(p)


@needs_libtpu
@pytest.mark.parametrize('topology', ['v5e:2x2', 'v5e:4x4'])
def test_inversion_has_no_collectives_and_discovery_all_reduces_the_gradient(topology):
  p = _plan(topology, 1)
  assert p['inversion']['collectives']['total'] == 0
  coll = p['discovery']['collectives']
  # One all-reduce (dS and the loss terms' per-shard sums, as one tuple), nothing else.
  assert coll['all-reduce'] == 1 and coll['total'] == 1, coll


@needs_libtpu
def test_the_plan_compiles_the_jobs_default_global_mesh_and_host_is_a_what_if():
  pod = _plan('v5e:4x4', 1)  # the job's multi-host default: one mesh over the 16 chips of 4 hosts
  assert config.Job.mesh == 'global' and pod['inversion']['mesh'] == 'global' and not pod['notes']
  assert (
    pod['inversion']['mesh_devices'] == 16
    and pod['job_batch_size'] == 16
    and pod['job_batch_size_per_host'] == 4
  )
  assert 'launch.invert --batch_size=16 on every host (global mesh of 16 chips' in plan.table(pod)
  # v5e above 4x4: XLA:TPU refuses one host's chips, so the what-if --inversion_mesh=host compiles the
  # global mesh (what the job runs there) and says why; the default needs no such note.
  what_if = _plan('v5e:8x8', 1, programs=('inversion',), mesh='host')
  assert what_if['inversion']['mesh'] == 'global' and what_if['inversion']['mesh_devices'] == 64
  assert len(what_if['notes']) == 1 and plan.SLICE_ONLY in what_if['notes'][0], what_if['notes']
  assert '--config.job.mesh=host' in what_if['notes'][0] and what_if['job_batch_size'] == 64


@needs_libtpu
def test_per_chip_memory_grows_with_the_batch_not_with_the_chip_count():
  small, pod = _plan('v5e:2x2', 1), _plan('v5e:4x4', 1)
  assert (small['hosts'], pod['hosts']) == (1, 4) and pod['inversion']['mesh_devices'] == 16
  more = _plan('v5e:2x2', 2, programs=('inversion',))['inversion']['hbm_bytes_per_chip']
  assert more > small['inversion']['hbm_bytes_per_chip'] * 1.05
  for name in ('inversion', 'discovery'):
    assert pod[name]['hbm_bytes_per_chip'] == pytest.approx(small[name]['hbm_bytes_per_chip'], rel=0.02), name


@needs_libtpu
def test_flops_agree_with_the_analytic_conv_count():
  p = _plan('v5e:2x2', 1)
  inv, disc = p['inversion']['flops_per_step_per_image'], p['discovery']['flops_per_step_per_image']
  assert inv / analytic_inversion_flops() == pytest.approx(1.0, abs=0.10)
  assert disc / analytic_discovery_flops() == pytest.approx(1.0, abs=0.10)
  # The count is per image: the same at 2 images per chip.
  per_image = _plan('v5e:2x2', 2, programs=('inversion',))['inversion']['flops_per_step_per_image']
  assert per_image == pytest.approx(inv, rel=1e-4)


@needs_libtpu
def test_auto_batch_fits_and_one_more_does_not():
  m1 = _plan('v5e:2x2', 1, programs=('inversion',))['inversion']['hbm_bytes_per_chip']
  m2 = _plan('v5e:2x2', 2, programs=('inversion',))['inversion']['hbm_bytes_per_chip']
  # A what-if chip whose usable memory holds 1.5 images per chip (the search's probes are then the
  # programs compiled above; tests/test_plan.py::test_largest_fitting_... covers longer searches).
  usable = m1 + 0.5 * (m2 - m1)
  capacity = int((usable + fit.HEADROOM_BYTES) / (1 - fit.HEADROOM_FRACTION))
  auto = _plan('v5e:2x2', 0, programs=('inversion',), hbm_capacity=capacity)
  b = auto['per_chip_batch']
  assert b == 1 and sorted(auto['inversion']['auto_probes']) == [1, 2]
  assert auto['inversion']['hbm_bytes_per_chip'] <= fit.usable_bytes(capacity)
  more = _plan('v5e:2x2', b + 1, programs=('inversion',), hbm_capacity=capacity)['inversion']
  assert more['hbm_bytes_per_chip'] > fit.usable_bytes(capacity) and not more['fits_with_headroom']


@needs_libtpu
def test_a_batch_that_cannot_fit_is_one_line_and_status_2(capsys):
  status = plan.main(
    CFG, topology='v5e:2x2', resolution=RES, arch=ARCH, batch_size=1, num_subspaces=R, hbm_capacity=10**6
  )
  err = capsys.readouterr().err
  assert status == 2 and err.count('\n') == 1 and 'per-chip batch 1 needs' in err and 'TPU v5e' in err


def test_unknown_topology_is_one_line_and_status_2(capsys):
  expected = 'invalid or unknown TPU topology' if importlib.util.find_spec('libtpu') else 'libtpu'
  r = subprocess.run(
    [sys.executable, '-m', 'launch.plan', '--topology=v5e:3x3', f'--resolution={RES}'],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
  assert r.stderr.startswith('error: ') and r.stderr.count('\n') == 1 and expected in r.stderr, r.stderr
  assert plan.main(CFG, topology='nonsense', resolution=RES) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1 and expected in err


def test_missing_libtpu_is_a_clear_error(monkeypatch, capsys):
  real = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util, 'find_spec', lambda name, *a: None if name == 'libtpu' else real(name, *a)
  )
  assert plan.main(CFG, topology='v5e:2x2', resolution=RES, arch=ARCH) == 2
  assert "libtpu is not installed (pip install -e '.[tpu]')" in capsys.readouterr().err


@needs_libtpu
def test_cli_plans_a_checkpoints_architecture_and_writes_json(tmp_path):
  out = tmp_path / 'plan.json'
  r = subprocess.run(
    [sys.executable, '-m', 'launch.plan', '--topology=v5e:2x2', '--generator=demo', '--programs=discovery',
     f'--output_json={out}'],
    cwd=REPO, capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert r.returncode == 0, r.stderr
  result = json.loads(out.read_text())
  assert result['generator'] == checkpoints.load_generator_config('demo').to_dict()  # its config item only
  assert result['chips'] == 4 and result['discovery']['collectives']['all-reduce'] == 1
  assert '| discovery |' in r.stdout
  assert 'TPU_ACCELERATOR_TYPE' not in r.stderr  # libtpu's start-up warnings are kept off stderr


# ------------------------------------------------------------------------------------------------
# No TPU needed.


def test_largest_fitting_finds_the_boundary_in_few_compilations():
  limit = 1000
  for name, f in {
    'affine': lambda b: 100 + 37 * b,
    'sublinear': lambda b: 100 + 60 * b**0.8,
    'steps': lambda b: 100 + 200 * (b // 3),
  }.items():
    b, seen = fit.largest_fitting(f, limit, 1000)
    assert f(b) <= limit < f(b + 1), name
    assert all(seen[x] == int(f(x)) for x in seen)
    assert len(seen) <= 8, (name, sorted(seen))
  assert fit.largest_fitting(lambda b: 100 + 37 * b, limit, 1000)[1].keys() <= {1, 2, 24, 25}
  assert fit.largest_fitting(lambda b: 10 * b, limit, 16)[0] == 16  # the cap
  assert fit.largest_fitting(lambda b: 2000 * b, limit, 16) == (0, {1: 2000})


def test_collectives_are_counted_once_per_instruction():
  hlo = '\n'.join(
    [
      '  %all-reduce.1 = f32[4]{0} all-reduce(f32[4]{0} %x), replica_groups={{0,1}}, to_apply=%add',
      '  %ag = (f32[2], f32[4]) all-gather-start(f32[2] %y), dimensions={0}',
      '  %agd = f32[4] all-gather-done((f32[2], f32[4]) %ag)',
      '  %use = f32[4] add(f32[4] %all-reduce.1, f32[4] %agd)',
      '  %cp = f32[4] collective-permute(f32[4] %use), source_target_pairs={{0,1}}',
    ]
  )
  counts = aot.count_collectives(hlo)
  assert counts == {
    'all-reduce': 1,
    'all-gather': 1,
    'reduce-scatter': 0,
    'collective-permute': 1,
    'all-to-all': 0,
    'total': 3,
  }


@pytest.fixture(scope='module')
def cpu_job():
  """The batch job's inputs for the tiny config on the 4 test CPU devices, laid out as the job does (its
  mesh in its multi-host default scope, which on one process holds the process's devices)."""
  gcfg = pggan.GeneratorConfig(resolution=RES, **ARCH)
  m = mesh_lib.job_mesh(config.Job.mesh)
  gen = mesh_lib.replicate(pggan.Generator(gcfg, pggan.init_params(gcfg, jax.random.key(0))), m)
  percep = mesh_lib.replicate(pretrained.load_perceptual(CFG.loss.perceptual), m)
  b = 2 * m.size
  targets = mesh_lib.put_rows(np.zeros((b - 1, RES, RES, 3), np.float32), m, b)
  c = pggan.feature_shape(gcfg, LAYER)[-1]
  masks = np.stack([np.arange(c) % R == r for r in range(R)])
  keys = mesh_lib.put_rows(np.stack([np.array([0, i], np.uint32) for i in range(b - 1)]), m, b)
  state = mesh_lib.shard_batch(inversion.init_state(gen, percep, targets, masks, CFG, keys), m)
  return gcfg, m, gen, percep, targets, masks, state


def test_plan_compiles_the_program_the_job_runs(cpu_job):
  gcfg, m, gen, percep, targets, masks, state = cpu_job
  assert inversion.run_steps_jit is inversion._run_steps_jit  # what run_steps dispatches
  x, tfeat = inversion._objective_jit(percep, targets, None, CFG)
  job = inversion.run_steps_jit.lower(
    gen, percep, state, x, tfeat, masks=jnp.asarray(masks, jnp.float32), known=None, cfg=CFG, num_steps=3
  )
  planned = aot.inversion_program(gcfg, CFG, R, m, targets.shape[0], 3).lower()
  assert planned.as_text() == job.as_text()


@pytest.mark.parametrize(
  'overrides',
  [
    {'task.name': 'super_resolve', 'task.factor': 4},
    {'task.name': 'inpaint'},
    {'task.name': 'colorize', 'loss.perceptual_weight': 0.0},
    {'method.name': 'mganprior', 'method.num_codes': 4},
  ],
  ids=['super_resolve', 'inpaint', 'colorize-no-vgg', 'mganprior'],
)
def test_plan_programs_lower_for_every_task_and_method(cpu_job, overrides):
  gcfg, m, *_ = cpu_job
  cfg = config.override(CFG, overrides)
  text = aot.inversion_program(gcfg, cfg, R, m, 2 * m.size, 2).lower().as_text()
  size = RES // 4 if cfg.task.name == 'super_resolve' else RES
  assert f'tensor<{2 * m.size}x{size}x{size}x3xf32>' in text


def test_auto_batch_size_on_cpu_keeps_the_default_and_searches_given_a_capacity(cpu_job, caplog):
  gcfg, m, *_ = cpu_job
  auto = config.override(CFG, {'job.batch_size': 0, 'job.steps_per_call': 1})
  assert fit.resolve_batch_size(CFG, gcfg, R, m) is CFG  # an explicit batch is kept
  assert fit.resolve_batch_size(auto, gcfg, R, m).job.batch_size == config.Job.batch_size
  footprint = lambda b: aot.compile_program(aot.inversion_program(gcfg, auto, R, m, b * m.size, 1))['memory'][
    'footprint_bytes'
  ]
  f1, f2 = footprint(1), footprint(2)
  capacity = int((f1 + 0.5 * (f2 - f1) + fit.HEADROOM_BYTES) / (1 - fit.HEADROOM_FRACTION))
  got = fit.resolve_batch_size(auto, gcfg, R, m, capacity=capacity).job.batch_size
  assert got % m.size == 0
  per_device = got // m.size
  assert footprint(per_device) <= fit.usable_bytes(capacity) < footprint(per_device + 1)


def test_batch_size_flag_takes_auto():
  from launch import flags as launch_flags

  parser = launch_flags.flags.FLAGS['batch_size'].parser
  assert parser.parse('auto') == 0 and parser.parse('12') == 12
  with pytest.raises(ValueError):
    parser.parse('-3')
