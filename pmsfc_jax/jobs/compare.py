"""mGANprior vs PmSFC at equal iterations with the same per-image keys: shared by the demo and the
small-scale reproduction (``demo.py``, ``reproduce.py``)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from pmsfc_jax.core import config
from pmsfc_jax.core import inversion
from pmsfc_jax.core import objective
from pmsfc_jax.evaluation import metrics
from pmsfc_jax.io import progress


def with_method(cfg: config.DemoConfig | config.ReproduceConfig, method: str) -> config.InvertConfig:
  """``cfg`` for ``method`` with that method's code count (the other settings are shared)."""
  n = cfg.compare.num_codes_mganprior if method == 'mganprior' else cfg.compare.num_codes_pmsfc
  return dataclasses.replace(cfg, method=dataclasses.replace(cfg.method, name=method, num_codes=n))


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
  ``log_every_s``: progress lines during the optimisation (default ``cfg.job.log_every_s``).
  """
  out = {'seconds': {}}
  log_every_s = cfg.job.log_every_s if log_every_s is None else log_every_s
  for method in cfg.compare.methods:
    mcfg = with_method(cfg, method)
    t0 = time.time()
    with progress.Progress(
      len(targets) * mcfg.optim.iterations, method, 'images*steps', log_every_s
    ) as report:
      res = inversion.invert(
        gen,
        percep,
        targets,
        None if method == 'mganprior' else masks,
        mcfg,
        jnp.asarray(keys),
        aux,
        callback=lambda n, st: report.update(n * len(targets), wait_for=st.step),
      )
      res = jax.tree.map(np.asarray, res)
    out['seconds'][method] = time.time() - t0
    out[method] = res
    logging.info(
      '%s: %d images x %d steps in %.1f s',
      method,
      len(targets),
      mcfg.optim.iterations,
      out['seconds'][method],
    )
  return out


def image_metrics(reference: np.ndarray, candidate: np.ndarray, lpips_net=None) -> dict[str, np.ndarray]:
  """Per-image PSNR / SSIM (and LPIPS-VGG when ``lpips_net`` is given) of [-1,1] NHWC batches."""
  a01, b01 = (np.asarray(reference) + 1) / 2, (np.clip(np.asarray(candidate), -1, 1) + 1) / 2
  m = {'psnr': np.asarray(metrics.psnr(a01, b01)), 'ssim': np.asarray(metrics.ssim(a01, b01))}
  if lpips_net is not None:
    m['lpips'] = np.asarray(metrics.lpips(a01, b01, net=lpips_net))
  return m
