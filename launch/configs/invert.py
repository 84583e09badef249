"""Inversion config (``python -m launch.invert``): the presets of ``pmsfc_jax/core/presets.py``.

``--config=launch/configs/invert.py:mganprior,colorize`` selects comma-separated presets: method
(``pmsfc`` | ``mganprior``), task (``reconstruct`` | ``colorize`` | ``super_resolve`` | ``inpaint``),
``paper`` (the paper's exact configuration), ``eq9``, ``fast``, ``local``. Keys:
``pmsfc_jax/core/config.py`` (``--config.optim.lr=0.5``).
"""

from pmsfc_jax.core import config
from pmsfc_jax.core import presets


def get_config(arg=None):
  return config.to_config_dict(presets.invert(arg))
