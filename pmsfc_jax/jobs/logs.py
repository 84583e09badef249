"""Logging set-up of every command: library chatter (orbax's INFO lines, dozens per checkpoint) is
filtered so that the jobs' progress lines stay readable."""

from __future__ import annotations

import logging as pylogging

from absl import logging

QUIET_LIBRARIES = ('/orbax/',)


class _QuietLibraries(pylogging.Filter):
  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or not any(p in record.pathname for p in QUIET_LIBRARIES)


def quiet_libraries() -> None:
  """Drops INFO / DEBUG records of :data:`QUIET_LIBRARIES` (warnings and errors still show). Idempotent."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
    handler.addFilter(_QuietLibraries())
  for name in ('orbax', 'orbax.checkpoint'):
    pylogging.getLogger(name).setLevel(pylogging.WARNING)
