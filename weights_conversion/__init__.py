"""Converters from official PGGAN checkpoints to pmsfc_jax generator checkpoints (may import torch)."""
