"""Typed configs: frozen dataclass sections parsed once at the boundary, defaults written once.

A config class is a frozen (hashable: usable as a ``jax.jit`` static argument) dataclass whose fields are
values (``int``, ``float``, ``str``, ``bool``, ``X | None``, ``tuple[...]``) or nested config classes
(sections). Its field defaults are the ONLY place where defaults are written; :func:`to_config_dict`
turns a config into the ``ml_collections.ConfigDict`` of the command line and :func:`parse` turns a
ConfigDict / mapping / config back into the typed object, checking types and rejecting unknown keys.

Old spellings. A config class may declare ``LEGACY``: a map from an old flat key (``'lr'``,
``'perceptual.resize'``) to its new dotted path (``'optim.lr'``) or to a :class:`Removed` with the reason.
The one rule, applied by :func:`parse` (library) and by the launch scripts' flag parser (command line):
an old key that has a new home is translated with a logged warning naming the new key (and wins over a
value given at the new key: it can only have been set deliberately); an old key without one is refused
with a :class:`ConfigError` saying why.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import ml_collections
import numpy as np
from absl import logging
from ml_collections import config_dict

T = TypeVar('T')


class ConfigError(ValueError):
  """A config that cannot be parsed or validated; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Removed:
  """A legacy key with no new home; ``why`` says what replaces it."""

  why: str


def file_setting(default: str = '') -> Any:
  """A dataclass field naming a file or directory: results depend on its contents, not on its path."""
  return dataclasses.field(default=default, metadata={'file': True})


def check(ok: bool, message: str) -> None:
  """Raises :class:`ConfigError` with ``message`` unless ``ok`` (for ``__post_init__`` checks)."""
  if not ok:
    raise ConfigError(message)


def positive(value: Any, key: str) -> None:
  """A setting that must be a finite number > 0 (NaN, inf or <= 0 would make a meaningless run)."""
  ok = isinstance(value, (int, float)) and math.isfinite(value) and value > 0
  check(ok, f'{key} must be a finite number > 0, got {value!r}')


def one_of(value: Any, allowed: tuple, key: str) -> None:
  check(value in allowed, f'config.{key} must be one of {allowed}, got {value!r}')


def is_config(tp: Any) -> bool:
  return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def to_dict(cfg: Any) -> dict:
  """The nested plain dict of a config (tuples stay tuples)."""
  return dataclasses.asdict(cfg)


def to_config_dict(cfg: Any) -> ml_collections.ConfigDict:
  """The ConfigDict of the command line (``--config.section.key=value``) with ``cfg``'s values.

  ``None`` values of ``X | None`` fields become typed placeholders, so they stay overridable.
  """
  hints = typing.get_type_hints(type(cfg))
  out = {}
  for f in dataclasses.fields(cfg):
    value = getattr(cfg, f.name)
    if is_config(type(value)):
      out[f.name] = to_config_dict(value)
    elif value is None:
      inner = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
      out[f.name] = config_dict.placeholder(inner[0]) if inner else None
    else:
      out[f.name] = value
  return ml_collections.ConfigDict(out)


def plain(value: Any) -> Any:
  """ConfigDict / dataclass / mapping -> nested plain dicts (leaves unchanged)."""
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  elif dataclasses.is_dataclass(value) and not isinstance(value, type):
    value = dataclasses.asdict(value)
  if isinstance(value, Mapping):
    return {str(k): plain(v) for k, v in value.items()}
  return value


def flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """Nested dicts -> ``{'a.b': leaf}``."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping) and v:
      out.update(flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def unflatten(flat: Mapping[str, Any], sep: str = '.') -> dict:
  """``{'a.b': leaf}`` -> nested dicts (``sep`` separates the levels)."""
  tree: dict = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split(sep)
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def translate_key(cls: type, key: str) -> str:
  """The new dotted path of an old key (warning naming it); unchanged if ``key`` is not legacy."""
  new = getattr(cls, 'LEGACY', {}).get(key)
  if new is None or key in paths(cls):
    return key
  if isinstance(new, Removed):
    raise ConfigError(f'config key {key!r} no longer exists: {new.why}')
  logging.warning('config key %r is deprecated: use %r', key, new)
  return new


def translate(cls: type, tree: Mapping[str, Any]) -> dict:
  """Rewrites the legacy keys of a nested dict to their new paths (see the module docstring)."""
  flat = flatten(tree)
  new = {k: translate_key(cls, k) for k in flat}
  out = {k: v for k, v in flat.items() if new[k] == k}
  out.update({new[k]: v for k, v in flat.items() if new[k] != k})  # Legacy spellings win.
  return unflatten(out)


def paths(cls: type, prefix: str = '') -> dict[str, Any]:
  """Every dotted leaf path of a config class -> its type."""
  hints = typing.get_type_hints(cls)
  out = {}
  for f in dataclasses.fields(cls):
    tp = hints[f.name]
    if is_config(tp):
      out.update(paths(tp, f'{prefix}{f.name}.'))
    else:
      out[f'{prefix}{f.name}'] = tp
  return out


def _coerce(value: Any, tp: Any, key: str) -> Any:
  origin, args = typing.get_origin(tp), typing.get_args(tp)
  if origin in (typing.Union, types.UnionType):
    if value is None and type(None) in args:
      return None
    for member in (a for a in args if a is not type(None)):
      try:
        return _coerce(value, member, key)
      except ConfigError:
        continue
    raise ConfigError(
      f'config.{key} must be {" or ".join(getattr(a, "__name__", str(a)) for a in args)}, got {value!r}'
    )
  if origin is tuple:
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f'config.{key} must be a sequence, got {value!r}')
    item = args[0] if args else Any
    return tuple(v if item is Any else _coerce(v, item, key) for v in value)
  if tp is bool:
    if isinstance(value, (bool, np.bool_)):
      return bool(value)
  elif tp is int:
    if (
      isinstance(value, (int, np.integer, float, np.floating))
      and not isinstance(value, bool)
      and value == int(value)
    ):
      return int(value)
  elif tp is float:
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
      return float(value)
  elif tp is str:
    if isinstance(value, str):
      return value
  elif tp is Any:
    return value
  raise ConfigError(f'config.{key} must be {getattr(tp, "__name__", tp)}, got {value!r}')


def _build(cls: type[T], tree: Mapping[str, Any], prefix: str) -> T:
  hints = typing.get_type_hints(cls)
  names = [f.name for f in dataclasses.fields(cls)]
  for key in tree:
    if key not in names:
      close = difflib.get_close_matches(key, names, n=1)
      hint = f"; did you mean '{prefix}{close[0]}'?" if close else f'; known: {", ".join(names)}'
      raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
  kw = {}
  for name in names:
    if name not in tree:
      continue
    value, tp = tree[name], hints[name]
    if is_config(tp):
      if isinstance(value, tp):
        kw[name] = value
      elif isinstance(value, Mapping):
        kw[name] = _build(tp, value, f'{prefix}{name}.')
      else:
        raise ConfigError(f'config.{prefix}{name} is a section ({tp.__name__}), got {value!r}')
    else:
      kw[name] = _coerce(value, tp, prefix + name)
  try:
    return cls(**kw)
  except ConfigError:
    raise
  except (TypeError, ValueError) as e:
    raise ConfigError(str(e)) from None


def parse(cls: type[T], value: Any) -> T:
  """``value`` (a ``cls``, a ConfigDict or a nested mapping, old spellings allowed) -> a validated ``cls``.

  Missing keys take the dataclass defaults; unknown keys raise :class:`ConfigError` naming them.
  """
  if isinstance(value, cls):
    return value
  if value is None:
    return cls()
  tree = plain(value)
  if not isinstance(tree, Mapping):
    raise ConfigError(f'expected a {cls.__name__}, a ConfigDict or a mapping, got {type(value).__name__}')
  return _build(cls, translate(cls, tree), '')


def override(cfg: T, values: Mapping[str, Any]) -> T:
  """``cfg`` with dotted-path ``values`` replaced (``{'optim.lr': 0.03}``), validated like :func:`parse`."""
  if not values:
    return cfg
  tree = flatten(to_dict(cfg))
  tree.update({translate_key(type(cfg), k): v for k, v in values.items()})
  return _build(type(cfg), unflatten(tree), '')
