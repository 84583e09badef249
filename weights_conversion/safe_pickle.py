"""A restricted unpickler for NVIDIA's TensorFlow network pickles: numpy arrays and inert stubs only.

``pickle.load`` on an untrusted file runs arbitrary code (any importable callable can be named by the
GLOBAL / STACK_GLOBAL opcodes and then called by REDUCE). :class:`RestrictedUnpickler` overrides
``find_class``: a global outside a short allowlist is refused with :class:`UnsafePickleError` naming it,
before anything is called. Admitted:

* numpy array reconstruction (``numpy.core.multiarray._reconstruct`` / ``numpy._core...``, ``scalar``,
  ``numpy.core.numeric._frombuffer``, ``numpy.ndarray``, ``numpy.dtype``);
* ``_codecs.encode`` restricted to latin-1 (how Python 3 pickles bytes at protocol 2);
* ``collections.OrderedDict``;
* the network classes ``tfutil.Network`` (progressive_growing_of_gans) and ``dnnlib.tflib.network.Network``
  (later NVIDIA code), replaced by :class:`NetworkStub`, which only stores the state dict it is given;
  ``dnnlib.util.EasyDict`` becomes a plain dict subclass.

Legacy Theano-era pickles (``network.Network``, ``theano.*``, ``lasagne.*``) are refused with
:class:`LegacyPickleError`: convert them to the TF format with NVIDIA's code first, or use the TF pickles.
"""

from __future__ import annotations

import collections
import copyreg
import io
import os
import pickle
from typing import Any

import numpy as np
from numpy._core import multiarray as _np_multiarray
from numpy._core import numeric as _np_numeric


class UnsafePickleError(pickle.UnpicklingError):
  """The pickle names a global outside the allowlist; nothing was executed."""


class LegacyPickleError(pickle.UnpicklingError):
  """A pre-TensorFlow (Theano) PGGAN pickle."""


class NetworkStub:
  """Inert stand-in for ``tfutil.Network``: keeps the pickled state dict, runs nothing."""

  def __setstate__(self, state: Any):
    if not isinstance(state, dict):
      raise pickle.UnpicklingError(f'network state is a {type(state).__name__}, expected a dict')
    self.state = state

  # Convenience accessors over the official state keys.
  @property
  def name(self) -> str:
    return self.state.get('name', '?')

  @property
  def static_kwargs(self) -> dict:
    return dict(self.state.get('static_kwargs') or {})

  @property
  def build_func_name(self) -> str | None:
    return self.state.get('build_func_name')

  @property
  def build_module_src(self) -> str | None:
    return self.state.get('build_module_src')

  @property
  def variables(self) -> list:
    return list(self.state.get('variables') or [])

  def __repr__(self):
    return f'NetworkStub(name={self.name!r}, build_func_name={self.build_func_name!r})'


class EasyDictStub(dict):
  """``dnnlib.util.EasyDict`` without attribute magic."""


def _latin1_encode(obj, encoding='utf-8', errors='strict'):
  if encoding not in ('latin1', 'latin-1') or not isinstance(obj, str):
    raise UnsafePickleError(f'_codecs.encode({type(obj).__name__}, {encoding!r}) is not admitted '
                            '(only latin-1 encoding of a str, used by numpy arrays pickled at protocol 2)')
  return obj.encode('latin1', errors)


def _safe_reconstructor(cls, base, state):
  """``copyreg._reconstructor`` (protocol 0/1 objects) admitted only for the stub classes."""
  if cls not in (NetworkStub, EasyDictStub) or base not in (object, dict):
    raise UnsafePickleError(f'copyreg._reconstructor({cls!r}, {base!r}) is not admitted')
  return copyreg._reconstructor(cls, base, state)


_NETWORK_GLOBALS = {('tfutil', 'Network'), ('dnnlib.tflib.network', 'Network')}

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('_codecs', 'encode'): _latin1_encode,
    ('copyreg', '_reconstructor'): _safe_reconstructor,
    ('dnnlib.util', 'EasyDict'): EasyDictStub,
    **{key: NetworkStub for key in _NETWORK_GLOBALS},
}
for _mod in ('numpy.core.multiarray', 'numpy._core.multiarray'):
  ALLOWED_GLOBALS[(_mod, '_reconstruct')] = _np_multiarray._reconstruct
  ALLOWED_GLOBALS[(_mod, 'scalar')] = _np_multiarray.scalar
for _mod in ('numpy.core.numeric', 'numpy._core.numeric'):
  ALLOWED_GLOBALS[(_mod, '_frombuffer')] = _np_numeric._frombuffer

_LEGACY_MODULES = ('network', 'theano', 'lasagne', 'legacy')


class RestrictedUnpickler(pickle.Unpickler):
  """``pickle.Unpickler`` whose ``find_class`` admits only :data:`ALLOWED_GLOBALS`."""

  def __init__(self, file, *, source: str = '<pickle>'):
    super().__init__(file, encoding='latin1')
    self._source = source

  def find_class(self, module: str, name: str):
    key = (module, name)
    if key in ALLOWED_GLOBALS:
      return ALLOWED_GLOBALS[key]
    if module.split('.')[0] in _LEGACY_MODULES:
      raise LegacyPickleError(
          f'{self._source}: references {module}.{name}: this is a legacy Theano-era PGGAN pickle, which is not '
          'supported. Use the TensorFlow pickles (karras2018iclr-*.pkl from the "tensorflow-version" folder of '
          'the official release) or an mGANprior .pth state dict.')
    raise UnsafePickleError(
        f'{self._source}: refused to load global {module}.{name}: only numpy arrays and the network classes '
        f'{sorted(".".join(k) for k in _NETWORK_GLOBALS)} are admitted (nothing was executed)')

  def persistent_load(self, pid):
    raise UnsafePickleError(f'{self._source}: persistent id {pid!r} refused (not a TF network pickle)')


def loads(data: bytes, source: str = '<bytes>') -> Any:
  return RestrictedUnpickler(io.BytesIO(data), source=source).load()


def load(path: str | os.PathLike) -> Any:
  """Restricted-unpickles the file at ``path`` (see module docstring)."""
  from etils import epath
  data = epath.Path(path).read_bytes()
  return loads(data, os.fspath(path))
