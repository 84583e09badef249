"""PyTorch for the parity tests, or a skip that names where they run.

CI runs the suite twice (.ci/run): leg 1 (Python 3.11, jax 0.10) installs torch with the test extra and
runs the PyTorch parity tests; leg 2 (Python 3.12, the newest jax) installs no torch (several GB), and
exactly the tests that need it skip there with :data:`REASON`.
"""

import importlib.util

import pytest

REASON = (
  'needs torch (a PyTorch parity reference): runs in CI leg 1 (Python 3.11, jax 0.10, torch from the '
  'test extra); leg 2 (Python 3.12, the newest jax) installs no torch'
)
HAS_TORCH = importlib.util.find_spec('torch') is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason=REASON)


def require():
  """``torch`` for the calling test, or a skip naming the CI leg where the test runs."""
  return pytest.importorskip('torch', reason=REASON)
