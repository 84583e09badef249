"""Training config of the small PGGAN demo generator (``python -m launch.train_pggan``): ``presets.train_pggan``.

``:local``: the shipped demo model's settings, sized for a 2-core CPU.
"""

from pmsfc_jax.core import config
from pmsfc_jax.core import presets


def get_config(arg=None):
  return config.to_config_dict(presets.train_pggan(arg))
