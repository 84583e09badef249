"""Every orbax use of the repository: the checkpoint-manager factory, one-shot trees, generators.

* :func:`checkpoint_manager`: THE ``CheckpointManager`` factory (batch job, discovery, GAN training).
* :func:`save_tree` / :func:`restore_tree`: one-shot composite checkpoints (pytrees + JSON items), e.g.
  the subspace folder's ``result/`` and generator checkpoints.
* Generator checkpoints: an orbax composite checkpoint directory, loadable by path alone (or by name)::

    DIR/params/   orbax StandardSave of the params pytree (values exactly as in the source checkpoint)
    DIR/config/   orbax JsonSave of {'kind': 'pggan_generator', 'config': GeneratorConfig dict, 'meta': {...}}

  Shipped models live under ``pmsfc_jax/assets/<name>/`` and load by name (``load_generator('demo')``).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from pmsfc_jax.io import files
from pmsfc_jax.models import pggan

GENERATOR_KIND = 'pggan_generator'
ASSETS_DIR = epath.Path(__file__).parent.parent / 'assets'


def checkpoint_manager(
  directory: str | os.PathLike,
  *,
  max_to_keep: int,
  item_names: Optional[Sequence[str]] = None,
  process: Optional[tuple[int, int]] = None,
  async_: bool = False,
) -> ocp.CheckpointManager:
  """An orbax ``CheckpointManager`` in ``directory`` (created), stale temporary steps cleaned up.

  ``process=(index, count)`` makes the checkpoints process-local (each host saves its own, with no
  cross-host barrier), as the batch job's independent shares need; ``None`` is the usual global one.
  ``async_`` saves in the background (call ``wait_until_finished`` before reading them).
  """
  directory = epath.Path(directory)
  mp = ocp.options.MultiprocessingOptions()
  if process is not None and process[1] > 1:
    index = process[0]
    mp = ocp.options.MultiprocessingOptions(
      primary_host=index, active_processes={index}, barrier_sync_key_prefix=f'pmsfc_p{index}'
    )
  if process is not None:
    directory.mkdir(parents=True, exist_ok=True)  # (orbax refuses create=True with active_processes)
  options = ocp.CheckpointManagerOptions(
    max_to_keep=max_to_keep,
    create=process is None,
    enable_async_checkpointing=async_,
    cleanup_tmp_directories=True,
    multiprocessing_options=mp,
  )
  return ocp.CheckpointManager(files.absolute(directory), item_names=item_names, options=options)


def save_args(
  trees: Optional[Mapping[str, Any]] = None, json: Optional[Mapping[str, Any]] = None
) -> ocp.args.Composite:
  """Composite save arguments: pytrees (StandardSave) and JSON items."""
  return ocp.args.Composite(
    **{k: ocp.args.StandardSave(v) for k, v in (trees or {}).items()},
    **{k: ocp.args.JsonSave(v) for k, v in (json or {}).items()},
  )


def restore_args(trees: Optional[Mapping[str, Any]] = None, json: Sequence[str] = ()) -> ocp.args.Composite:
  """Composite restore arguments: pytrees (into the given template, or as saved for None) and JSON."""
  return ocp.args.Composite(
    **{k: ocp.args.StandardRestore(v) for k, v in (trees or {}).items()},
    **{k: ocp.args.JsonRestore() for k in json},
  )


def save_tree(
  path: str | os.PathLike,
  *,
  trees: Optional[Mapping[str, Any]] = None,
  json: Optional[Mapping[str, Any]] = None,
  force: bool = False,
) -> epath.Path:
  """One composite checkpoint at ``path`` (atomic; every process takes part, the primary one writes)."""
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(files.absolute(path), args=save_args(trees, json), force=force)
  return epath.Path(path)


def restore_tree(
  path: str | os.PathLike, *, trees: Optional[Mapping[str, Any]] = None, json: Sequence[str] = ()
) -> dict:
  """The named items of the composite checkpoint at ``path``."""
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    return dict(ckptr.restore(files.absolute(path), args=restore_args(trees, json)))


def resolve_asset(name_or_path: str | os.PathLike, kind: str = 'generator') -> epath.Path:
  """A shipped asset name (``'demo'``) -> ``pmsfc_jax/assets/demo/<kind>``; any other value is a path."""
  s = os.fspath(name_or_path)
  if s and '/' not in s and not s.startswith('.'):
    candidate = ASSETS_DIR / s / kind
    if candidate.exists():
      return candidate
    if not epath.Path(s).exists():
      shipped = (
        sorted(p.name for p in ASSETS_DIR.iterdir() if (p / kind).is_dir()) if ASSETS_DIR.exists() else []
      )
      raise FileNotFoundError(
        f'{kind} {s!r} is neither a directory nor a shipped {kind} (shipped: {shipped})'
      )
  return epath.Path(s)


def save_generator(
  path: str | os.PathLike,
  config: pggan.GeneratorConfig,
  params: Any,
  meta: dict | None = None,
  force: bool = False,
) -> epath.Path:
  """Writes ``params`` + ``config`` as one orbax checkpoint at ``path`` (atomic; process 0 writes)."""
  _check_params(config, params, os.fspath(path))
  blob = {'kind': GENERATOR_KIND, 'config': config.to_dict(), 'meta': meta or {}}
  return save_tree(
    path, trees={'params': jax.tree.map(np.asarray, params)}, json={'config': blob}, force=force
  )


def _checkpoint_dir(path: str | os.PathLike) -> epath.Path:
  path = resolve_asset(path)
  if not (path / 'config').exists():
    raise FileNotFoundError(
      f'{path} is not a generator checkpoint: missing {path / "config"} '
      '(convert a TF pickle or .pth with `python -m launch.convert` first)'
    )
  return path


def _generator_config(blob: dict, path: epath.Path) -> pggan.GeneratorConfig:
  if blob.get('kind') != GENERATOR_KIND:
    raise ValueError(f'{path}: checkpoint kind is {blob.get("kind")!r}, expected {GENERATOR_KIND!r}')
  return pggan.GeneratorConfig.from_dict(blob['config'])


def load_generator_config(path: str | os.PathLike) -> pggan.GeneratorConfig:
  path = _checkpoint_dir(path)
  return _generator_config(restore_tree(path, json=['config'])['config'], path)


def load_generator(path: str | os.PathLike) -> pggan.Generator:
  """Loads a generator checkpoint directory (or a shipped model name) -> ``Generator(config, params)``."""
  path = _checkpoint_dir(path)
  restored = restore_tree(path, trees={'params': None}, json=['config'])
  config = _generator_config(restored['config'], path)
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), restored['params'])
  _check_params(config, params, str(path))
  return pggan.Generator(config, params)


def _check_params(config: pggan.GeneratorConfig, params: Any, where: str):
  """Fails naming the first missing / extra / misshaped key against ``config``'s layout."""
  expected = pggan.param_shapes(config)
  got = {
    '/'.join(str(getattr(k, 'key', k)) for k in path): tuple(np.shape(leaf))
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
  }
  missing = sorted(set(expected) - set(got))
  extra = sorted(set(got) - set(expected))
  if missing:
    raise ValueError(f'{where}: missing parameter {missing[0]!r} (all missing: {missing})')
  if extra:
    raise ValueError(f'{where}: unexpected parameter {extra[0]!r} (all extra: {extra})')
  for k, shape in expected.items():
    if got[k] != shape:
      raise ValueError(f'{where}: parameter {k!r} has shape {got[k]}, expected {shape}')
