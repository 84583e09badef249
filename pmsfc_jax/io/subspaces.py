"""Subspace folders (written by ``launch.discover``, shipped as ``pmsfc_jax/assets/<name>/subspaces``).

Shipped names: ``demo`` (the demo generator's, trained here), ``celebahq`` and ``bedroom`` (layer 3,
R = 6, 512 channels: clustered from the self-expressive matrices the PmSFC authors released, for the
official 1024x1024 CelebA-HQ / 256x256 LSUN-bedroom PGGANs; ``tools/make_official_subspaces.py``, their
``PROVENANCE.md``). :func:`load_subspaces` given the generator (and the inversion's layer) refuses
subspaces that do not fit it, in one line.

A folder holds ``S.npy`` (C x C, paper layout), ``masks.npy`` (R x C bool), ``labels.npy`` (C,), an orbax
checkpoint ``result/`` (S, masks, labels, history, config) and ``subspaces.json`` (layer, R, C, sizes and
how it was made), written last: a folder that has it is complete. ``.npy`` files are never unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import jax
import numpy as np
from etils import epath

from pmsfc_jax.core import clustering
from pmsfc_jax.core import composition
from pmsfc_jax.core import schema
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import files
from pmsfc_jax.models import pggan

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Subspaces:
  """A partition of the channels of ``layer`` into R subspaces (paper's m = {m_1..m_R}, Eq. 6)."""

  masks: np.ndarray  # (R, C) bool
  labels: np.ndarray  # (C,) int, masks[labels[c], c] is True
  S: Optional[np.ndarray]  # (C, C) float32 (paper layout), None if not stored
  layer: int
  meta: dict = dataclasses.field(default_factory=dict)

  @property
  def num_subspaces(self) -> int:
    return self.masks.shape[0]

  @property
  def num_channels(self) -> int:
    return self.masks.shape[1]


def load_matrix(
  path: str | os.PathLike, num_channels: int | None = None, layout: str = 'paper', diagonal: str = 'keep'
) -> np.ndarray:
  """Reads S from ``.npy`` (never unpickles), validates it, returns it in the paper layout, float32.

  ``layout='official'`` transposes a matrix saved by the official PyTorch code (``F_rec = M F``).
  ``diagonal='keep'`` leaves the stored diagonal (the official matrices keep their 1e-4 init, which the
  official scripts threshold with; ``core/clustering.py``), ``'zero'`` sets it to 0.
  """
  S = files.load_npy(path, 'self-expressive matrix')
  S = clustering.check_matrix(S, num_channels, name=str(path))
  if layout == 'official':
    S = S.T
  elif layout != 'paper':
    raise ValueError(f"matrix_layout must be 'paper' or 'official', got {layout!r}")
  return clustering.apply_diagonal(S, diagonal).astype(np.float32)


def write_subspaces(
  out_dir: str | os.PathLike,
  S: np.ndarray,
  labels: np.ndarray,
  num_subspaces: int,
  layer: int,
  history: dict | None = None,
  meta: dict | None = None,
) -> epath.Path:
  """Writes the subspace folder (see the module docstring). Call on every process; process 0 writes."""
  out_dir = epath.Path(out_dir)
  masks = composition.check_masks(clustering.masks_from_labels(labels, num_subspaces))
  info = {
    'format_version': FORMAT_VERSION,
    'layer': int(layer),
    'num_subspaces': int(num_subspaces),
    'channels': int(masks.shape[1]),
    'sizes': [int(x) for x in masks.sum(axis=1)],
    **(meta or {}),
  }
  history = {k: np.asarray(v, np.float32) for k, v in (history or {}).items()}
  arrays = {'S': np.asarray(S, np.float32), 'masks': masks, 'labels': np.asarray(labels, np.int32)}
  if jax.process_index() == 0:
    for name, arr in arrays.items():
      files.save_npy(out_dir / f'{name}.npy', arr)
  # Every process takes part in the orbax save (it synchronises hosts); only the primary one writes.
  tree = dict(arrays, masks=masks.astype(np.uint8), **({'history': history} if history else {}))
  checkpoints.save_tree(out_dir / 'result', trees={'arrays': tree}, json={'config': info}, force=True)
  if jax.process_index() == 0:
    files.write_json(out_dir / 'subspaces.json', info, indent=2)
  return out_dir


def load_subspaces(
  dir_or_name: str | os.PathLike,
  generator: pggan.Generator | pggan.GeneratorConfig | None = None,
  layer: int | None = None,
) -> Subspaces:
  """A subspace folder written by ``launch.discover`` (or a shipped name: 'demo', 'celebahq',
  'bedroom') -> Subspaces.

  Reads the plain ``.npy`` files (no pickles) and ``subspaces.json``; falls back to the orbax
  ``result/`` checkpoint when the .npy files are absent. Validates that the masks partition the channels.
  With ``layer``, the subspaces must have been found at that layer; with ``generator`` (a Generator or
  its config), its channel count at their layer must be theirs: otherwise a ``ConfigError`` (a
  ``ValueError``) in one line naming both.
  """
  path = checkpoints.resolve_asset(dir_or_name, 'subspaces')
  info_path = path / 'subspaces.json'
  if not info_path.exists():
    raise FileNotFoundError(
      f'{path} is not a subspace directory: missing {info_path} (create one with `python -m launch.discover`)'
    )
  try:
    info = json.loads(info_path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f'{info_path}: invalid JSON ({e})') from None
  for key in ('layer', 'num_subspaces', 'channels'):
    if key not in info:
      raise ValueError(f'{info_path}: missing key {key!r}')
  masks, labels, S = (
    files.load_npy(path / n) if (path / n).exists() else None for n in ('masks.npy', 'labels.npy', 'S.npy')
  )
  if masks is None and (path / 'result').exists():
    tree = checkpoints.restore_tree(path / 'result', trees={'arrays': None})['arrays']
    masks, labels, S = (np.asarray(tree['masks']), np.asarray(tree['labels']), np.asarray(tree['S']))
  if masks is None:
    raise FileNotFoundError(f'{path}: missing masks.npy (and no orbax result/ checkpoint)')
  masks = composition.check_masks(masks, int(info['channels']), name=str(path / 'masks.npy'))
  if masks.shape[0] != int(info['num_subspaces']):
    raise ValueError(
      f'{path}: masks.npy has {masks.shape[0]} subspaces, subspaces.json says {info["num_subspaces"]}'
    )
  derived = np.argmax(masks, axis=0)
  if labels is None:
    labels = derived
  elif labels.shape != derived.shape or not np.array_equal(labels, derived):
    raise ValueError(f'{path}: labels.npy does not match masks.npy')
  if S is not None:
    S = clustering.check_matrix(S, masks.shape[1], name=str(path / 'S.npy')).astype(np.float32)
  sub = Subspaces(masks=masks, labels=np.asarray(labels, np.int64), S=S, layer=int(info['layer']), meta=info)
  check_fits(sub, os.fspath(dir_or_name), generator, layer)
  return sub


def check_fits(
  sub: Subspaces,
  name: str,
  generator: pggan.Generator | pggan.GeneratorConfig | None = None,
  layer: int | None = None,
) -> None:
  """Raises ``ConfigError`` (one line) unless ``sub`` was found at ``layer`` and ``generator`` has
  ``sub.num_channels`` channels there (each check only when given)."""
  made_for = f' (made for {sub.meta["generator"]})' if sub.meta.get('generator') else ''
  if layer is not None and int(layer) != sub.layer:
    raise schema.ConfigError(
      f'--subspaces={name}: {sub.num_subspaces} subspaces of layer {sub.layer}{made_for}, but the '
      f'inversion composes at layer {layer} (config.model.layer)'
    )
  if generator is not None:
    cfg = generator.config if isinstance(generator, pggan.Generator) else generator
    if sub.layer > cfg.num_layers:
      raise schema.ConfigError(
        f'--subspaces={name}: subspaces of layer {sub.layer}{made_for}, but the generator '
        f'({cfg.resolution}x{cfg.resolution}) has only layers 0..{cfg.num_layers}'
      )
    channels = pggan.feature_shape(cfg, sub.layer)[-1]
    if channels != sub.num_channels:
      raise schema.ConfigError(
        f'--subspaces={name}: {sub.num_subspaces} subspaces of the {sub.num_channels} channels of layer '
        f'{sub.layer}{made_for}, but the generator ({cfg.resolution}x{cfg.resolution}) has {channels} '
        f'channels at layer {sub.layer}'
      )
