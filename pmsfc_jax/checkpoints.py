"""Orbax checkpoints of model weights plus their configuration, loadable by path alone (or by name).

A generator checkpoint is an orbax composite checkpoint directory::

  DIR/params/   orbax StandardSave of the params pytree (values exactly as in the source checkpoint)
  DIR/config/   orbax JsonSave of {'kind': 'pggan_generator', 'config': GeneratorConfig dict, 'meta': {...}}

Shipped models live under ``pmsfc_jax/assets/<name>/`` and load by name (``load_generator('demo')``).
Paths go through ``etils.epath`` so ``gs://`` works on TPU hosts.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from pmsfc_jax.models import pggan

GENERATOR_KIND = 'pggan_generator'
ASSETS_DIR = epath.Path(__file__).parent / 'assets'


def resolve_asset(name_or_path: str | os.PathLike, kind: str = 'generator') -> epath.Path:
  """A shipped asset name (``'demo'``) -> ``pmsfc_jax/assets/demo/<kind>``; any other value is a path."""
  s = os.fspath(name_or_path)
  if s and '/' not in s and not s.startswith('.'):
    candidate = ASSETS_DIR / s / kind
    if candidate.exists():
      return candidate
    if not epath.Path(s).exists():
      shipped = sorted(p.name for p in ASSETS_DIR.iterdir()) if ASSETS_DIR.exists() else []
      raise FileNotFoundError(f'{kind} {s!r} is neither a directory nor a shipped model (shipped: {shipped})')
  return epath.Path(s)


def save_generator(path: str | os.PathLike, config: pggan.GeneratorConfig, params: Any,
                   meta: dict | None = None, force: bool = False) -> epath.Path:
  """Writes ``params`` + ``config`` as one orbax checkpoint at ``path`` (atomic; process 0 writes)."""
  path = epath.Path(path)
  _check_params(config, params, str(path))
  params = jax.tree.map(np.asarray, params)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(path.absolute() if not str(path).startswith('gs://') else path,
               args=ocp.args.Composite(
                   params=ocp.args.StandardSave(params),
                   config=ocp.args.JsonSave({'kind': GENERATOR_KIND, 'config': config.to_dict(),
                                              'meta': meta or {}})),
               force=force)
  return path


def load_generator_config(path: str | os.PathLike) -> pggan.GeneratorConfig:
  path = resolve_asset(path)
  if not (path / 'config').exists():
    raise FileNotFoundError(f'{path} is not a generator checkpoint: missing {path / "config"} '
                            '(convert a TF pickle or .pth with `python -m launch.convert` first)')
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    restored = ckptr.restore(_abs(path), args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  blob = restored['config']
  if blob.get('kind') != GENERATOR_KIND:
    raise ValueError(f'{path}: checkpoint kind is {blob.get("kind")!r}, expected {GENERATOR_KIND!r}')
  return pggan.GeneratorConfig.from_dict(blob['config'])


def load_generator(path: str | os.PathLike) -> pggan.Generator:
  """Loads a generator checkpoint directory (or a shipped model name) -> ``Generator(config, params)``."""
  path = resolve_asset(path)
  config = load_generator_config(path)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    restored = ckptr.restore(_abs(path), args=ocp.args.Composite(params=ocp.args.StandardRestore()))
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), restored['params'])
  _check_params(config, params, str(path))
  return pggan.Generator(config, params)


def _abs(path: epath.Path) -> epath.Path:
  return path if str(path).startswith('gs://') else path.absolute()


def _check_params(config: pggan.GeneratorConfig, params: Any, where: str):
  """Fails naming the first missing / extra / misshaped key against ``config``'s layout."""
  expected = pggan.param_shapes(config)
  got = {'/'.join(str(getattr(k, 'key', k)) for k in path): tuple(np.shape(leaf))
         for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  missing = sorted(set(expected) - set(got))
  extra = sorted(set(got) - set(expected))
  if missing:
    raise ValueError(f'{where}: missing parameter {missing[0]!r} (all missing: {missing})')
  if extra:
    raise ValueError(f'{where}: unexpected parameter {extra[0]!r} (all extra: {extra})')
  for k, shape in expected.items():
    if got[k] != shape:
      raise ValueError(f'{where}: parameter {k!r} has shape {got[k]}, expected {shape}')
