"""Test shorthand: typed configs from a preset plus flat ``key=value`` settings (the old flat names map to
their section paths, without the deprecation warning of the legacy route)."""

from pmsfc_jax.core import config
from pmsfc_jax.core import discovery_config
from pmsfc_jax.core import presets


def with_values(cfg, **flat):
  legacy = type(cfg).LEGACY
  return config.override(
    cfg, {legacy.get(k, k) if isinstance(legacy.get(k, k), str) else k: v for k, v in flat.items()}
  )


def invert(arg=None, **flat) -> config.InvertConfig:
  return with_values(presets.invert(arg), **flat)


def discover(**flat) -> discovery_config.DiscoverConfig:
  return with_values(discovery_config.DiscoverConfig(), **flat)
