"""Config of ``python -m launch.reproduce``: ``presets.reproduce`` (``:local``: 2 faces, 2 iterations)."""

from pmsfc_jax.core import config
from pmsfc_jax.core import presets


def get_config(arg=None):
  return config.to_config_dict(presets.reproduce(arg))
