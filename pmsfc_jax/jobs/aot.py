"""Ahead-of-time compilation of the jobs' own jitted steps on abstract inputs, and what XLA says of them.

The programs are exactly what the jobs dispatch: ``inversion.run_steps_jit`` (what ``run_steps`` calls,
with the job's ``num_steps`` per call: one ``lax.scan`` on accelerators) and ``self_expression.train_chunk``
(Algorithm 1), with the jobs' layout: the batch over the ``'data'`` axis of ``core/mesh.make_mesh``,
generator / VGG params and the self-expressive matrix replicated. Inputs are ``jax.ShapeDtypeStruct``s
carrying ``NamedSharding``s, so no weight is read and the devices may be compile-only (a TPU topology
from ``jax.experimental.topologies``, ``jobs/plan.py``) or the job's own (``--batch_size=auto``).

What is read off a compiled program, and how (jax 0.10 and 0.12 alike):

* memory: ``compiled.memory_analysis()``, per device. The footprint is the larger of
  ``peak_memory_in_bytes`` and arguments + outputs + temporaries - aliased (donated) bytes: on TPU v5e
  ``temp_size_in_bytes`` is 0 for the inversion step while the peak grows with the batch (the sum would
  miss the activations), and XLA:CPU reports a peak that leaves the temporaries out (the sum is right).
* collectives: all-reduce / all-gather / reduce-scatter / collective-permute / all-to-all instructions in
  the optimised, SPMD-partitioned HLO text (``compiled.as_text()``), async pairs counted once (by their
  ``-start``); an op inside a loop body counts once.
* FLOPs per step: XLA's HloCostAnalysis of the SAME function lowered for the host CPU with unsharded
  inputs and one step (:func:`model_flops`). A TPU executable's ``cost_analysis()`` counts per device,
  counts a scan body once and includes XLA:TPU's layout rewrites (1.0-1.4x the model count, not linear
  in the batch), and ``Lowered.cost_analysis()`` of a TPU lowering is unavailable; the CPU lowering is
  platform-neutral, exactly linear in the batch and counts convolutions without the taps that fall on
  zero padding (tests/test_plan.py checks it against an analytic count).
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp

from pmsfc_jax.core import config
from pmsfc_jax.core import discovery_config
from pmsfc_jax.core import inversion
from pmsfc_jax.core import mesh as mesh_lib
from pmsfc_jax.core import objective
from pmsfc_jax.core import self_expression
from pmsfc_jax.models import pggan
from pmsfc_jax.models import vgg

COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'collective-permute', 'all-to-all')
# An HLO instruction reads '%name = <shape> <opcode>(<operands>), ...': the opcode follows a space and
# precedes '('; a use of a collective's result reads '%all-reduce.3' and does not match.
_COLLECTIVE = re.compile(r' (' + '|'.join(COLLECTIVES) + r')(-start)?\(')


def abstract(tree: Any, sharding: Any = None) -> Any:
  """ShapeDtypeStructs (with ``sharding``; None: unsharded) of every leaf of ``tree``."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


@dataclasses.dataclass(frozen=True)
class Program:
  """A jitted function with its (abstract) arguments: ``lower()`` is what the job would dispatch."""

  name: str
  jitted: Any
  args: tuple
  kwargs: dict
  batch: int  # images (inversion) or latents (discovery) of the global batch

  def lower(self):
    return self.jitted.lower(*self.args, **self.kwargs)

  def unsharded(self) -> 'Program':
    """The same program without shardings or mesh (for the host-CPU lowering of :func:`model_flops`)."""
    strip = lambda t: jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype) if isinstance(a, jax.ShapeDtypeStruct) else a, t
    )
    kwargs = {k: (None if k == 'mesh' else strip(v)) for k, v in self.kwargs.items()}
    return dataclasses.replace(self, args=strip(self.args), kwargs=kwargs)

  def with_steps(self, num_steps: int) -> 'Program':
    return dataclasses.replace(self, kwargs={**self.kwargs, 'num_steps': num_steps})


def vgg_params(layer: str, sharding: Any = None) -> dict:
  """Abstract ImageNet VGG16 params up to ``layer`` (the shapes of ``io.pretrained.load_vgg16_params``)."""
  params, cin = {}, 3
  for i in range(vgg.convs_needed([layer])):
    cout = vgg.CHANNELS[vgg.RELU_LAYERS[i]]
    params[f'Conv_{i}'] = {'kernel': (3, 3, cin, cout), 'bias': (cout,)}
    cin = cout
  is_shape = lambda s: isinstance(s, tuple) and all(isinstance(d, int) for d in s)
  return jax.tree.map(
    lambda s: jax.ShapeDtypeStruct(s, jnp.float32, sharding=sharding), params, is_leaf=is_shape
  )


def generator(gcfg: pggan.GeneratorConfig, sharding: Any = None) -> pggan.Generator:
  """A Generator with abstract params (``init_params``'s shapes)."""
  params = jax.eval_shape(lambda: pggan.init_params(gcfg, jax.random.key(0)))
  return pggan.Generator(gcfg, abstract(params, sharding))


def inversion_program(
  gcfg: pggan.GeneratorConfig,
  cfg: config.InvertConfig,
  num_subspaces: Optional[int],
  mesh: jax.sharding.Mesh,
  batch: int,
  num_steps: int,
) -> Program:
  """``inversion.run_steps_jit`` on ``batch`` images laid out over ``mesh`` as the batch job does it."""
  rep, bsh = mesh_lib.replicated_sharding(mesh), mesh_lib.batch_sharding(mesh)
  gen = generator(gcfg, rep)
  percep = None
  if objective.uses_perceptual(cfg):
    percep = objective.Perceptual(cfg.loss.perceptual, vgg_params(cfg.loss.perceptual.layer, rep))
  size = inversion.input_size(gen, cfg)
  res = gcfg.resolution
  targets = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  channels = pggan.feature_shape(gcfg, cfg.model.layer)[-1]
  masks = None
  if cfg.method.name == 'pmsfc':  # As the job passes them: an uncommitted array (jit replicates it).
    masks = jax.ShapeDtypeStruct((num_subspaces, channels), jnp.float32)
  known = None
  if cfg.task.name == 'inpaint':
    known = jax.ShapeDtypeStruct((batch, res, res, 1), jnp.float32, sharding=bsh)
  keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), batch))
  state = jax.eval_shape(
    lambda g, t, m, k, kn: inversion.init_state(g, None, t, m, cfg, k, kn), gen, targets, masks, keys, known
  )
  tfeat = None
  if percep is not None:
    tfeat = jax.eval_shape(
      lambda p, t: objective.perceptual_features(p, t, objective.compute_dtype(cfg)), percep, targets
    )
    tfeat = abstract(tfeat, bsh)
  args = (gen, percep, abstract(state, bsh), abstract(targets, bsh), tfeat)
  kwargs = dict(masks=masks, known=known, cfg=cfg, num_steps=num_steps)
  return Program('inversion', inversion.run_steps_jit, args, kwargs, batch)


def discovery_program(
  gcfg: pggan.GeneratorConfig,
  layer: int,
  hp: discovery_config.SelfExpression,
  mesh: jax.sharding.Mesh,
  num_steps: int,
) -> Program:
  """``self_expression.train_chunk``: latents over every device of ``mesh``, S replicated."""
  rep = mesh_lib.replicated_sharding(mesh)
  model = self_expression.GeneratorFeatures(gcfg, layer)
  aux = generator(gcfg, rep).params
  state = abstract(jax.eval_shape(lambda: self_expression.init_state(model.num_channels, hp)), rep)
  key = abstract(jax.eval_shape(lambda: jax.random.key(0)), rep)
  kwargs = dict(hp=hp, num_steps=num_steps, mesh=mesh)
  return Program('discovery', self_expression.train_chunk, (model, aux, state, key), kwargs, hp.batch_size)


# ------------------------------------------------------------------------------------------------
# What XLA says.


def count_collectives(hlo_text: str) -> dict:
  """Collective instructions of an HLO module text by kind (see the module docstring), plus 'total'."""
  counts = dict.fromkeys(COLLECTIVES, 0)
  for m in _COLLECTIVE.finditer(hlo_text):
    counts[m.group(1)] += 1
  counts['total'] = sum(counts.values())
  return counts


def cost(analysis: Any) -> dict:
  """``cost_analysis()`` as one dict (older jax returned a list with one dict per program)."""
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return dict(analysis or {})


MEMORY_FIELDS = (
  'argument_size_in_bytes',
  'output_size_in_bytes',
  'temp_size_in_bytes',
  'alias_size_in_bytes',
  'generated_code_size_in_bytes',
  'peak_memory_in_bytes',
)


def memory(compiled: Any) -> dict:
  """Per-device memory fields of a compiled program + ``footprint_bytes`` and its ``footprint_source``."""
  stats = compiled.memory_analysis()
  out = {f: int(getattr(stats, f, 0) or 0) for f in MEMORY_FIELDS} if stats is not None else {}
  live = (
    out.get('argument_size_in_bytes', 0)
    + out.get('output_size_in_bytes', 0)
    + out.get('temp_size_in_bytes', 0)
    - out.get('alias_size_in_bytes', 0)
  )
  if out.get('peak_memory_in_bytes', 0) >= live:
    out.update(footprint_bytes=out['peak_memory_in_bytes'], footprint_source='peak_memory_in_bytes')
  else:
    out.update(footprint_bytes=live, footprint_source='argument + output + temp - alias')
  return out


def model_flops(program: Program) -> float:
  """FLOPs of ONE step of ``program``'s global batch: HloCostAnalysis of its host-CPU lowering."""
  one = program.unsharded().with_steps(1)
  with jax.default_device(jax.devices('cpu')[0]):
    return float(cost(one.lower().cost_analysis()).get('flops', float('nan')))


class DoesNotFit(Exception):
  """The compiler refused the program for lack of device memory (XLA:TPU checks HBM while compiling)."""

  def __init__(self, message: str, required_bytes: int):
    super().__init__(message)
    self.required_bytes = required_bytes


# XLA:TPU: 'RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries
# (16.47G) exceeds available HBM (15.75G).' (binary units, as XLA prints byte counts).
_REQUIRED = re.compile(r'required for [^(]*\(([\d.]+)([KMGT]?)\)')
_UNITS = {'': 1, 'K': 2**10, 'M': 2**20, 'G': 2**30, 'T': 2**40}


def compile_program(program: Program) -> dict:
  """Lowers and compiles ``program``: compile seconds, memory, collectives, the executable's own costs.

  Raises :class:`DoesNotFit` when the compiler finds that the program cannot fit the device memory.
  """
  t0 = time.perf_counter()
  lowered = program.lower()
  t1 = time.perf_counter()
  try:
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except  # jax.errors.JaxRuntimeError
    if 'RESOURCE_EXHAUSTED' not in str(e):
      raise
    line = str(e).strip().splitlines()[0]
    m = _REQUIRED.search(line)
    raise DoesNotFit(line, int(float(m.group(1)) * _UNITS[m.group(2)]) if m else 2**62) from None
  t2 = time.perf_counter()
  c = cost(compiled.cost_analysis())
  return {
    'lower_seconds': round(t1 - t0, 2),
    'compile_seconds': round(t2 - t1, 2),
    'memory': memory(compiled),
    'collectives': count_collectives(compiled.as_text()),
    'executable_flops_per_device': c.get('flops'),
    'executable_bytes_accessed_per_device': c.get('bytes accessed'),
  }
