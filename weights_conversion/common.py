"""Shared machinery of the converters: a name map with one explicit transform per tensor.

A conversion is a list of :class:`Rule` (source key, expected source shape, target key, transform) plus a
set of source keys that must exist with a given shape but are deliberately not used (e.g. the ToRGB layers
of the lower resolutions, kept by the official checkpoints for progressive growing). :func:`apply_rules`
fails on the first missing, unexpected or misshaped source key, naming it, and checks that the result has
exactly the layout ``pmsfc_jax.models.pggan.param_shapes(config)`` describes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from pmsfc_jax.core import schema
from pmsfc_jax.models import pggan


class ConversionError(ValueError):
  """A source checkpoint does not match the layout the converter expects (message names the key)."""


@dataclasses.dataclass(frozen=True)
class Rule:
  """``target[target_key] = transform(source[source_key])`` with ``source[source_key].shape == shape``."""

  source_key: str
  shape: tuple[int, ...]
  target_key: str
  transform: Callable[[np.ndarray], np.ndarray]
  doc: str = ''


@dataclasses.dataclass(frozen=True)
class Ignored:
  """A source key that must exist with ``shape`` but whose value is not used (``why`` says why)."""

  source_key: str
  shape: tuple[int, ...]
  why: str


def identity(x: np.ndarray) -> np.ndarray:
  return x


def check_keys(source: Mapping[str, Any], rules: list[Rule], ignored: list[Ignored], where: str):
  """Fails naming the first missing, extra or misshaped key of ``source``."""
  expected = {r.source_key: r.shape for r in rules}
  for ig in ignored:
    expected[ig.source_key] = ig.shape
  missing = [k for k in expected if k not in source]
  if missing:
    raise ConversionError(
      f'{where}: missing key {missing[0]!r} (expected shape {expected[missing[0]]}; '
      f'{len(missing)} missing in all: {missing[:8]}{" ..." if len(missing) > 8 else ""})'
    )
  extra = sorted(k for k in source if k not in expected)
  if extra:
    raise ConversionError(
      f'{where}: unexpected key {extra[0]!r} with shape {tuple(np.shape(source[extra[0]]))} '
      f'({len(extra)} unexpected in all: {extra[:8]}{" ..." if len(extra) > 8 else ""})'
    )
  for k, shape in expected.items():
    got = tuple(np.shape(source[k]))
    if got != tuple(shape):
      raise ConversionError(f'{where}: key {k!r} has shape {got}, expected {tuple(shape)}')


def apply_rules(
  source: Mapping[str, np.ndarray],
  rules: list[Rule],
  ignored: list[Ignored],
  config: pggan.GeneratorConfig,
  where: str,
) -> dict:
  """Checks ``source`` against the rules and returns the nested float32 params pytree of ``config``."""
  check_keys(source, rules, ignored, where)
  flat = {}
  for r in rules:
    value = np.asarray(r.transform(np.asarray(source[r.source_key], np.float32)), np.float32)
    if r.target_key in flat:
      raise AssertionError(f'two rules write {r.target_key!r}')
    flat[r.target_key] = np.ascontiguousarray(value)
  target_shapes = pggan.param_shapes(config)
  for k, shape in target_shapes.items():
    if k not in flat:
      raise AssertionError(f'converter rules do not produce parameter {k!r}')
    if flat[k].shape != shape:
      raise AssertionError(f'rule for {k!r} produced shape {flat[k].shape}, expected {shape}')
  if set(flat) != set(target_shapes):
    raise AssertionError(
      f'converter rules produce unknown parameters {sorted(set(flat) - set(target_shapes))}'
    )
  return schema.unflatten(flat, sep='/')


def fmaps_from_channels(channels: Mapping[int, int], where: str) -> tuple[int, int]:
  """Finds (fmaps_base, fmaps_max) with ``min(fmaps_base // res, fmaps_max) == channels[res]`` for all res.

  Prefers the official fmaps_base 16384 when it is consistent. Raises naming the per-resolution channel
  counts when no pair fits.
  """
  resolutions = sorted(channels)
  fmaps_max = max(channels.values())
  candidates = [16384]
  for res in resolutions:
    if channels[res] < fmaps_max:
      candidates.append(channels[res] * res)
      break
  else:
    candidates.append(fmaps_max * resolutions[-1])
  for base in candidates:
    if all(min(base // r, fmaps_max) == channels[r] for r in resolutions):
      return base, fmaps_max
  raise ConversionError(
    f'{where}: the channel counts per resolution {dict(sorted(channels.items()))} do not follow '
    'nf(res) = min(fmaps_base // res, fmaps_max) for any fmaps_base / fmaps_max'
  )


def fused_from_blocks(fused: Mapping[int, bool], where: str):
  """Per-resolution fused flags (resolutions >= 8) -> GeneratorConfig.fused_scale (True/False/'auto')."""
  values = set(fused.values())
  if values <= {True}:
    return True if values else False
  if values == {False}:
    return False
  if all(f == (res >= 128) for res, f in fused.items()):
    return 'auto'
  raise ConversionError(
    f'{where}: fused (transposed-conv) upsampling at resolutions '
    f'{sorted(r for r, f in fused.items() if f)} only: not a PGGAN layout '
    "(expected all, none, or 'auto' = from 128x128 on)"
  )


def check_config_override(
  inferred: pggan.GeneratorConfig, overrides: Mapping[str, Any], where: str
) -> pggan.GeneratorConfig:
  """Explicit config values must agree with what the checkpoint says (fmaps: same channel counts)."""
  overrides = {k: v for k, v in overrides.items() if v is not None}
  if not overrides:
    return inferred
  wanted = dataclasses.replace(inferred, **overrides)
  mismatch = []
  for name in ('resolution', 'z_dim', 'num_channels'):
    if getattr(wanted, name) != getattr(inferred, name):
      mismatch.append(f'{name}={getattr(wanted, name)!r} but the checkpoint has {getattr(inferred, name)!r}')
  if [l.out_channels for l in pggan.layer_table(wanted)] != [
    l.out_channels for l in pggan.layer_table(inferred)
  ]:
    mismatch.append(
      f'fmaps_base={wanted.fmaps_base}, fmaps_max={wanted.fmaps_max} give channels '
      f'{[l.out_channels for l in pggan.layer_table(wanted)][1::2]} but the checkpoint has '
      f'{[l.out_channels for l in pggan.layer_table(inferred)][1::2]}'
    )
  if [l.name for l in pggan.layer_table(wanted)] != [l.name for l in pggan.layer_table(inferred)]:
    mismatch.append(f'fused_scale={wanted.fused_scale!r} but the checkpoint has {inferred.fused_scale!r}')
  if mismatch:
    raise ConversionError(
      f'{where}: explicit configuration disagrees with the checkpoint: ' + '; '.join(mismatch)
    )
  return wanted
