"""Subspace exchange between two inverted images (``launch.edit``; paper Fig. 4).

Reads two ``<stem>.npz`` results of the batch inversion (``launch.invert``: codes, weights, subspace
masks, config), composes each one's layer-l features, gives the first the channels of subspace r of the
second (``core/editing.py: exchange_subspace``) and decodes with G2. Subspace r = 0 is the largest; with
the shipped ``celebahq`` subspaces a subspace is a group of channels of the first 8x8 layer, whose meaning
is learnt, not labelled (see each subspace's exchange grid with ``launch.discover``). With
``paste_back`` the edited face is pasted back into the photo the result was aligned from (``paste.py``).
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from absl import logging

from pmsfc_jax.core import config
from pmsfc_jax.core import editing
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import files
from pmsfc_jax.io import images
from pmsfc_jax.io import subspaces as subspaces_lib
from pmsfc_jax.jobs import paste


class Inverted(NamedTuple):
  codes: np.ndarray
  weights: np.ndarray
  masks: np.ndarray  # (R, C) bool; (0, 0) for an mGANprior result
  cfg: config.InvertConfig


def load_inverted(path: str | os.PathLike) -> Inverted:
  """A ``launch.invert`` result ``.npz`` (read without pickles); errors name the file."""
  path = os.fspath(path)
  if not files.absolute(path).exists():
    raise FileNotFoundError(f'{path} does not exist (a <stem>.npz written by launch.invert)')
  try:
    with files.absolute(path).open('rb') as f, np.load(f, allow_pickle=False) as z:
      arrays = {k: np.asarray(z[k]) for k in ('codes', 'weights', 'masks', 'config')}
  except (ValueError, KeyError, OSError) as e:
    raise ValueError(f'{path}: not a launch.invert result .npz ({e})') from None
  cfg = config.parse(config.InvertConfig, json.loads(str(arrays['config'])))
  return Inverted(arrays['codes'], arrays['weights'], arrays['masks'].astype(bool), cfg)


def _load(flag: str, path: str) -> Inverted:
  """``load_inverted``; an unreadable file is a usage error naming the flag (exit status 2)."""
  try:
    return load_inverted(path)
  except (OSError, ValueError) as e:
    raise config.ConfigError(f'--{flag}={path}: {e}') from None


def run(
  generator: str,
  inverted: str,
  donor: str,
  subspace: int,
  output: str,
  subspaces: str | None = None,
  paste_back: bool = False,
) -> np.ndarray:
  """Writes ``output`` (PNG): ``inverted`` with subspace ``subspace`` taken from ``donor``; returns it.

  The masks are those recorded in the results (both must agree), or ``subspaces`` (a subspace folder or
  shipped name: needed for mGANprior results, which record none). ``paste_back``: ``output`` is the
  photo ``inverted`` was aligned from with the edited face pasted in (``paste.py``; the result must have
  been inverted with ``--config.task.align=face``).
  """
  record = None
  if paste_back:
    try:
      record = paste.load_record(inverted)
    except ValueError as e:
      raise config.ConfigError(f'--paste_back: {e}') from None
  gen = checkpoints.load_generator(generator)
  a, b = _load('inverted', inverted), _load('donor', donor)
  for what, x, y in (
    ('method', a.cfg.method, b.cfg.method),
    ('layer', a.cfg.model.layer, b.cfg.model.layer),
    ('subspace masks', a.masks.tobytes(), b.masks.tobytes()),
  ):
    if x != y:
      raise config.ConfigError(f'--inverted={inverted} and --donor={donor} differ in their {what}')
  if subspaces:
    masks = subspaces_lib.load_subspaces(subspaces, generator=gen, layer=a.cfg.model.layer).masks
  elif a.masks.size:
    masks = a.masks
  else:
    raise config.ConfigError(f'--inverted={inverted} records no subspace masks (mGANprior): pass --subspaces')
  if not 0 <= subspace < masks.shape[0]:
    raise config.ConfigError(f'--subspace must be in [0, {masks.shape[0]}), got {subspace}')
  result = Inverted(jnp.stack([a.codes, b.codes]), jnp.stack([a.weights, b.weights]), masks, a.cfg)
  out = np.asarray(editing.exchange_subspace(gen, result, masks, a.cfg, subspace, pairs=[[0, 1]]))[0]
  out = np.clip(out, -1, 1)
  if record is not None:
    try:
      images.save_image(output, images.to_float(paste.paste_into_photo(record, out)))
    except (OSError, ValueError) as e:
      raise config.ConfigError(f'--paste_back: {e}') from None
  else:
    images.save_image(output, out)
  logging.info('wrote %s: %s with subspace %d of %s', output, inverted, subspace, donor)
  return out
