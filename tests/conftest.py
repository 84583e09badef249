"""Shared test set-up: 4 forced CPU devices (sharding tests), the shared data folder, tiny generators."""

import os

# Must happen before jax initialises its backends: gives sharding tests 4 CPU devices.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pathlib

import jax
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get('PMSFC_SHARED', REPO.parent / 'shared'))
DATA = SHARED / 'data'


@pytest.fixture(scope='session')
def shared_data() -> pathlib.Path:
  if not DATA.is_dir():
    pytest.skip(f'shared data folder {DATA} is absent (set PMSFC_SHARED)')
  return DATA


@pytest.fixture(scope='session')
def tiny_generator():
  """A 32x32 random-weight PGGAN with narrow channels (64), z_dim 64: fast enough for any test."""
  from pmsfc_jax.models import pggan

  cfg = pggan.GeneratorConfig(resolution=32, z_dim=64, fmaps_base=2048, fmaps_max=64)
  return pggan.Generator(cfg, pggan.init_params(cfg, jax.random.key(0)))
