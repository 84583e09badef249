"""Config of the main job (``python -m launch.demo``): ``presets.demo`` (``:local``: a few iterations)."""

from pmsfc_jax.core import config
from pmsfc_jax.core import presets


def get_config(arg=None):
  return config.to_config_dict(presets.demo(arg))
