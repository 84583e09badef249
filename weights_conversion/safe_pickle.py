"""NVIDIA's TensorFlow network pickles read with the library's restricted unpickler: numpy arrays and
inert stubs only.

``pickle.load`` on an untrusted file runs arbitrary code (any importable callable can be named by the
GLOBAL / STACK_GLOBAL opcodes and then called by REDUCE). :class:`TFNetworkUnpickler` is
``pmsfc_jax.io.pretrained.RestrictedUnpickler`` with a longer allow-list: a global outside it is refused
with :class:`UnsafePickleError` naming it, before anything is called. Admitted:

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
import os
import pickle
from typing import Any

from etils import epath

from pmsfc_jax.io import pretrained

UnsafePickleError = pretrained.UnsafePickleError


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
    raise UnsafePickleError(
      f'_codecs.encode({type(obj).__name__}, {encoding!r}) is not admitted '
      '(only latin-1 encoding of a str, used by numpy arrays pickled at protocol 2)'
    )
  return obj.encode('latin1', errors)


def _safe_reconstructor(cls, base, state):
  """``copyreg._reconstructor`` (protocol 0/1 objects) admitted only for the stub classes."""
  if cls not in (NetworkStub, EasyDictStub) or base not in (object, dict):
    raise UnsafePickleError(f'copyreg._reconstructor({cls!r}, {base!r}) is not admitted')
  return copyreg._reconstructor(cls, base, state)


_NETWORK_GLOBALS = {('tfutil', 'Network'), ('dnnlib.tflib.network', 'Network')}

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
  **pretrained.NUMPY_GLOBALS,
  ('collections', 'OrderedDict'): collections.OrderedDict,
  ('_codecs', 'encode'): _latin1_encode,
  ('copyreg', '_reconstructor'): _safe_reconstructor,
  ('dnnlib.util', 'EasyDict'): EasyDictStub,
  **{key: NetworkStub for key in _NETWORK_GLOBALS},
}

_LEGACY_MODULES = ('network', 'theano', 'lasagne', 'legacy')


class TFNetworkUnpickler(pretrained.RestrictedUnpickler):
  """The library's restricted unpickler admitting :data:`ALLOWED_GLOBALS`; Theano-era pickles are named."""

  def __init__(self, file, *, source: str = '<pickle>'):
    super().__init__(
      file,
      ALLOWED_GLOBALS,
      source=source,
      encoding='latin1',
      admitted=f'numpy arrays and the network classes {sorted(".".join(k) for k in _NETWORK_GLOBALS)}',
    )

  def find_class(self, module: str, name: str):
    if (module, name) not in self.allowed and module.split('.')[0] in _LEGACY_MODULES:
      raise LegacyPickleError(
        f'{self.source}: references {module}.{name}: this is a legacy Theano-era PGGAN pickle, which is not '
        'supported. Use the TensorFlow pickles (karras2018iclr-*.pkl from the "tensorflow-version" folder of '
        'the official release) or an mGANprior .pth state dict.'
      )
    return super().find_class(module, name)


def loads(data: bytes, source: str = '<bytes>') -> Any:
  return pretrained.restricted_loads(data, source, TFNetworkUnpickler)


def load(path: str | os.PathLike) -> Any:
  """Restricted-unpickles the file at ``path`` (see module docstring)."""
  return loads(epath.Path(path).read_bytes(), os.fspath(path))
