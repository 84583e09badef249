"""Config of prior subspace discovery (``python -m launch.discover``): ``presets.discover``.

``:local``: a small CPU variant for the 32x32 demo generator. Any key is overridable, e.g.
``--config.optim.lr=1e-3``.
"""

from pmsfc_jax.core import config
from pmsfc_jax.core import presets


def get_config(arg=None):
  return config.to_config_dict(presets.discover(arg))
