"""Inversions side by side with the same per-image keys: shared by the demo and the reproduction
(``demo.py``, ``reproduce.py``)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from pmsfc_jax.core import config
from pmsfc_jax.core import inversion
from pmsfc_jax.core import objective
from pmsfc_jax.evaluation import metrics
from pmsfc_jax.io import progress

# The metrics of the comparisons: two LPIPS backbones, AlexNet being one the VGG16 loss never sees.
IMAGE_METRICS = ('psnr', 'ssim', 'lpips_vgg', 'lpips_alex')


def with_method(cfg: config.DemoConfig | config.ReproduceConfig, method: str) -> config.InvertConfig:
  """``cfg`` for ``method`` with that method's code count (the other settings are shared)."""
  n = cfg.compare.num_codes_mganprior if method == 'mganprior' else cfg.compare.num_codes_pmsfc
  return dataclasses.replace(cfg, method=dataclasses.replace(cfg.method, name=method, num_codes=n))


def invert_one(
  gen,
  masks: Optional[np.ndarray],
  percep: Optional[objective.Perceptual],
  targets: np.ndarray,
  cfg: config.InvertConfig,
  keys: np.ndarray,
  aux=None,
  log_every_s: Optional[float] = None,
) -> tuple[Any, float]:
  """(``InversionResult`` as host numpy, seconds) of ``targets`` under ``cfg``, with progress lines
  (default every ``cfg.job.log_every_s``). ``masks`` are ignored by mGANprior."""
  method = cfg.method.name
  log_every_s = cfg.job.log_every_s if log_every_s is None else log_every_s
  t0 = time.time()
  with progress.Progress(len(targets) * cfg.optim.iterations, method, 'images*steps', log_every_s) as report:
    res = inversion.invert(
      gen,
      percep if objective.uses_perceptual(cfg) else None,
      targets,
      None if method == 'mganprior' else masks,
      cfg,
      jnp.asarray(keys),
      aux,
      callback=lambda n, st: report.update(n * len(targets), wait_for=st.step),
    )
    res = jax.tree.map(np.asarray, res)
  seconds = time.time() - t0
  logging.info('%s: %d images x %d steps in %.1f s', method, len(targets), cfg.optim.iterations, seconds)
  return res, seconds


def compare_methods(
  gen,
  masks: np.ndarray,
  percep: Optional[objective.Perceptual],
  targets: np.ndarray,
  cfg: config.DemoConfig | config.ReproduceConfig,
  keys: np.ndarray,
  aux=None,
  log_every_s: Optional[float] = None,
) -> dict[str, Any]:
  """Inverts ``targets`` with every method in ``cfg.compare.methods`` (:func:`with_method`).

  Returns ``{method: InversionResult (host numpy)}`` plus ``seconds``. Same per-image keys for both.
  """
  out = {'seconds': {}}
  for method in cfg.compare.methods:
    out[method], out['seconds'][method] = invert_one(
      gen, masks, percep, targets, with_method(cfg, method), keys, aux, log_every_s
    )
  return out


def image_metrics(
  reference: np.ndarray, candidate: np.ndarray, names: Sequence[str] = IMAGE_METRICS
) -> dict[str, np.ndarray]:
  """Per-image ``names`` (``evaluation.metrics.METRICS``) of [-1, 1] NHWC batches (candidate clipped)."""
  return metrics.compute(
    list(names), np.asarray(reference), np.clip(np.asarray(candidate), -1, 1), signed=True
  )
