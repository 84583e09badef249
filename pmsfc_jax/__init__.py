"""pmsfc-jax: PmSFC (AAAI 2021) GAN inversion and its mGANprior baseline on a Flax PGGAN, as pure JAX.

The functional API for research code (attributes load lazily, so ``import pmsfc_jax`` is cheap)::

  import pmsfc_jax
  gen = pmsfc_jax.load_generator('demo')                  # or a converted checkpoint directory
  masks = pmsfc_jax.load_subspaces('demo').masks          # (R, C) bool, Algorithm 1's subspaces
  cfg = pmsfc_jax.presets.invert('pmsfc,colorize')        # the paper's defaults (typed, hashable)
  percep = pmsfc_jax.load_perceptual(cfg.loss.perceptual) # V of Eq. 2 / 8 (ImageNet VGG16)
  x = pmsfc_jax.prepare_target(images, cfg.task)          # P of Eq. 9: the degraded inputs
  res = pmsfc_jax.invert(gen, percep, x, masks, cfg, keys)
  grid = pmsfc_jax.exchange_subspace(gen, res, masks, cfg, subspace=0)   # Fig. 4

Entry points per equation (all jittable pure functions of arrays, pytrees and static configs):
``compose`` (Eq. 6-7, Eq. 1 for mGANprior), ``objective`` (Eq. 8 / 9 of one image: what ``invert``
differentiates), ``discover`` (Algorithm 1: S and its loss history), ``cluster`` (S -> subspace labels),
``invert`` (with ``init_state`` / ``run_steps`` / ``finalize`` for custom loops), ``exchange_subspace``
(Fig. 4), ``interpolate`` (Fig. 6). Configs: ``InvertConfig``, ``DiscoverConfig``, ``config`` (parse,
override, the schema), ``presets``. Loaders: ``load_generator``, ``load_subspaces``, ``load_perceptual``,
``load_image``, ``list_inputs``, ``image_keys``; ``save_image``, ``make_grid``. See docs/architecture.md
for the rooms of the package.
"""

import importlib
from typing import Any

_API = {
  'compose': 'pmsfc_jax.core.composition',
  'objective': 'pmsfc_jax.core.objective',
  'discover': 'pmsfc_jax.core.self_expression',
  'cluster': 'pmsfc_jax.core.clustering',
  'invert': 'pmsfc_jax.core.inversion',
  'init_state': 'pmsfc_jax.core.inversion',
  'run_steps': 'pmsfc_jax.core.inversion',
  'finalize': 'pmsfc_jax.core.inversion',
  'render': 'pmsfc_jax.core.inversion',
  'exchange_subspace': 'pmsfc_jax.core.editing',
  'interpolate': 'pmsfc_jax.core.editing',
  'prepare_target': 'pmsfc_jax.core.degradations',
  'InvertConfig': 'pmsfc_jax.core.config',
  'DiscoverConfig': 'pmsfc_jax.core.discovery_config',
  'load_generator': 'pmsfc_jax.io.checkpoints',
  'load_subspaces': 'pmsfc_jax.io.subspaces',
  'load_perceptual': 'pmsfc_jax.io.pretrained',
  'load_image': 'pmsfc_jax.io.images',
  'save_image': 'pmsfc_jax.io.images',
  'make_grid': 'pmsfc_jax.io.images',
  'list_inputs': 'pmsfc_jax.io.listing',
  'image_keys': 'pmsfc_jax.io.listing',
}
_MODULES = {'config': 'pmsfc_jax.core.config', 'presets': 'pmsfc_jax.core.presets'}

__all__ = sorted([*_API, *_MODULES])


def __getattr__(name: str) -> Any:
  if name in _MODULES:
    value = importlib.import_module(_MODULES[name])
  elif name in _API:
    value = getattr(importlib.import_module(_API[name]), name)
  else:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted([*globals(), *__all__])
