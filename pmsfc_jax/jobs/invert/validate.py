"""The batch job's checks before anything is written: required flags, paths, models, masks, devices and
the input listing. Every failure is a one-line ``config.ConfigError`` naming the flag, key or file (exit
status 2); the output folder is created only after all of them passed (``output.py``). Several processes
check the same things and agree (``multihost.Processes.all_or_none``, :func:`same_inputs`), so they all
stop together, naming the host at fault."""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Optional, Sequence

import numpy as np

from pmsfc_jax.core import config
from pmsfc_jax.core import inversion
from pmsfc_jax.core import mesh
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import listing
from pmsfc_jax.io import masks as masks_lib
from pmsfc_jax.io import pretrained
from pmsfc_jax.io import subspaces
from pmsfc_jax.jobs import multihost


def required(cfg: config.InvertConfig) -> None:
  for flag, value in (
    ('--images', cfg.job.images),
    ('--output_dir', cfg.job.output_dir),
    ('--generator', cfg.model.generator),
  ):
    if not value:
      raise config.ConfigError(f'{flag} is required')
  if cfg.method.name == 'pmsfc' and not cfg.model.subspaces:
    raise config.ConfigError(
      '--method=pmsfc needs --subspaces (a launch.discover output or a shipped name); '
      '--method=mganprior needs none'
    )
  if cfg.task.name == 'inpaint' and not cfg.task.mask:
    raise config.ConfigError('--task=inpaint needs --mask=PNG (white = hole)')


def _setting(flag: str, value: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
  """``fn(*args, **kwargs)``; a failure becomes a one-line ``ConfigError`` naming ``flag`` (status 2)."""
  try:
    return fn(*args, **kwargs)
  except config.ConfigError:
    raise
  except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
    msg = ' '.join(str(e).split()) or type(e).__name__
    raise config.ConfigError(msg if flag in msg else f'{flag}={value!r}: {msg}') from None


def _subspace_masks(cfg: config.InvertConfig, gen) -> Optional[np.ndarray]:
  if cfg.method.name != 'pmsfc':
    return None
  sub = subspaces.load_subspaces(cfg.model.subspaces, generator=gen, layer=cfg.model.layer)
  return np.asarray(sub.masks, bool)


def setup_process(job: config.Job) -> multihost.Processes:
  """``jax.distributed`` start-up with ``--distributed``; the processes of the run and whether they run
  in lockstep (``job.mesh='global'`` on several processes, ``core/mesh.py``)."""
  if not job.distributed:
    return multihost.Processes()
  index, count = multihost.initialize(
    job.coordinator_address or None,
    job.num_processes or None,
    None if job.process_id < 0 else job.process_id,
    heartbeat_timeout_s=job.heartbeat_timeout_s,
  )
  return multihost.Processes(index, count, lockstep=job.mesh == 'global')


def same_inputs(procs: multihost.Processes, items: Sequence[listing.InputItem], images: str) -> None:
  """Every process must list the same inputs (each takes its share of the sorted list): a one-line
  ``ConfigError`` naming the first host whose listing differs from process 0's (every process raises it)."""
  if procs.count == 1:
    return
  digest = hashlib.sha256('\n'.join(it.name for it in items).encode()).hexdigest()[:16]
  views = procs.gather([len(items), digest])
  bad = next((k for k, view in enumerate(views) if view != views[0]), None)
  if bad is not None:
    raise config.ConfigError(
      f'--images={images}: process {bad} lists {views[bad][0]} inputs (digest {views[bad][1]}) but process 0 '
      f'lists {views[0][0]} ({views[0][1]}): every host must list the same inputs (a file system or bucket '
      'every host sees)'
    )


def validate(cfg: config.InvertConfig, procs: Optional[multihost.Processes] = None) -> dict:
  """Everything that can be wrong with the command, checked before anything is written: the paths, the
  models and masks, the devices and the input listing (``ConfigError`` naming the flag)."""
  j = cfg.job
  _setting('--output_dir', j.output_dir, listing.check_output_dir, j.images, j.output_dir)
  gen = _setting('--generator', cfg.model.generator, checkpoints.load_generator, cfg.model.generator)
  size = _setting('--factor', cfg.task.factor, inversion.input_size, gen, cfg)
  masks = _setting('--subspaces', cfg.model.subspaces, _subspace_masks, cfg, gen)
  known = None
  if cfg.task.name == 'inpaint':
    res, thr = gen.config.resolution, cfg.task.mask_threshold
    known = _setting(
      '--mask', cfg.task.mask, masks_lib.load_inpainting_mask, cfg.task.mask, size=res, threshold=thr
    )
  percep = None
  if cfg.loss.perceptual_weight != 0:
    percep = _setting(
      '--config.loss.perceptual', cfg.loss.perceptual, pretrained.load_perceptual, cfg.loss.perceptual
    )
  scope = 'global' if procs is not None and procs.lockstep else 'host'
  m = _setting('--config.job.num_devices', j.num_devices, mesh.job_mesh, scope, j.num_devices or None)
  items = _setting('--images', j.images, listing.list_inputs, j.images, exclude=j.output_dir)
  return dict(gen=gen, size=size, masks=masks, known=known, percep=percep, mesh=m, items=items)
