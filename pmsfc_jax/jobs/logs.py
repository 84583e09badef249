"""Logging set-up of every command: library chatter (orbax's INFO lines, dozens per checkpoint) is
filtered so that the jobs' progress lines stay readable.

libtpu (the ``[tpu]`` extra, for ``launch.plan``) on a machine with no TPU: jax still tries its TPU
backend, and libtpu's C++ start-up prints several lines to stderr ('could not determine TPU accelerator
type', 'unexpected worker hostname ...', a source location trace) before jax falls back to the CPU or
GPU; ``get_topology_desc`` prints the same. Those lines bypass Python logging, so when no TPU is attached
(no Google device on the PCI bus: the test jax's ``cloud_tpu_init`` makes) :func:`quiet_libraries` gives
libtpu the two settings it looks for (``TPU_ACCELERATOR_TYPE``, ``TPU_WORKER_HOSTNAMES``, only if unset):
it then stays quiet, and without a chip its backend still fails over to the next one as before. It also
lets several processes load libtpu at once (``ALLOW_MULTIPLE_LIBTPU_LOAD``: libtpu's lock file guards the
chips, and there are none), e.g. ``launch.plan`` runs side by side.
"""

from __future__ import annotations

import glob
import importlib.util
import logging as pylogging
import os
import pathlib

from absl import logging

# orbax: dozens of INFO lines per checkpoint; xla_bridge: "Unable to initialize backend 'tpu'" (INFO)
# on every start where libtpu (or a TPU plugin) is installed and no TPU is attached.
QUIET_LIBRARIES = ('/orbax/', '/jax/_src/xla_bridge.py')
GOOGLE_PCI_VENDOR = '0x1ae0'
ABSENT_TPU_ENV = {
  'TPU_ACCELERATOR_TYPE': 'v5litepod-1',
  'TPU_WORKER_HOSTNAMES': 'localhost',
  'ALLOW_MULTIPLE_LIBTPU_LOAD': '1',
}


class _QuietLibraries(pylogging.Filter):
  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or not any(p in record.pathname for p in QUIET_LIBRARIES)


def tpu_attached() -> bool:
  """Whether a Google TPU chip is on this machine's PCI bus."""
  return any(
    pathlib.Path(p).read_text().strip() == GOOGLE_PCI_VENDOR
    for p in glob.glob('/sys/bus/pci/devices/*/vendor')
  )


def quiet_absent_tpu() -> None:
  """libtpu installed but no TPU attached: keep libtpu's start-up warnings off stderr (module docstring)."""
  if importlib.util.find_spec('libtpu') is not None and not tpu_attached():
    for key, value in ABSENT_TPU_ENV.items():
      os.environ.setdefault(key, value)


def quiet_libraries() -> None:
  """Drops INFO / DEBUG records of :data:`QUIET_LIBRARIES` (warnings and errors still show) and libtpu's
  warnings where no TPU is attached. Idempotent."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
    handler.addFilter(_QuietLibraries())
  for name in ('orbax', 'orbax.checkpoint'):
    pylogging.getLogger(name).setLevel(pylogging.WARNING)
  quiet_absent_tpu()
