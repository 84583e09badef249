"""THE table writers of the jobs' reports: markdown (printed, ``*.md``) and CSV."""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Sequence


def cell(value: Any, float_format: str = '.4f') -> str:
  """A table cell: floats with ``float_format``, None and NaN empty, anything else ``str``."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return ''
  return format(value, float_format) if isinstance(value, float) else str(value)


def markdown(header: Sequence[str], rows: Sequence[Sequence[Any]], float_format: str = '.4f') -> str:
  """A markdown table (no trailing newline)."""
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(cell(v, float_format) for v in row) + ' |' for row in rows]
  return '\n'.join(lines)


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]], float_format: str = '.4f') -> str:
  """CSV text with a header row; cells formatted like :func:`cell`."""
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator='\n')
  w.writerow(header)
  w.writerows([cell(v, float_format) for v in row] for row in rows)
  return buf.getvalue()
