"""The batch job's checks before anything is written: required flags, paths, models, masks, devices and
the input listing. Every failure is a one-line ``config.ConfigError`` naming the flag, key or file (exit
status 2); the output folder is created only after all of them passed (``output.py``). Several processes
check the same things and agree (``multihost.Processes.all_or_none``, :func:`same_everywhere`), so they
all stop together, naming the host at fault."""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Optional, Sequence

import numpy as np

from pmsfc_jax.core import config
from pmsfc_jax.core import inversion
from pmsfc_jax.core import mesh
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import faces
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


# Job settings that may differ between the processes of one run (paths as each host mounts them, identity).
PER_HOST = ('images', 'output_dir', 'coordinator_address', 'num_processes', 'process_id')


def same_everywhere(
  procs: multihost.Processes, items: Sequence[listing.InputItem], cfg: config.InvertConfig, digest: str
) -> None:
  """Every process must list the same inputs (each takes its share of the sorted list), compute the same
  configuration fingerprint ``digest`` (the same settings, generator, subspace and mask files) and run
  the same job settings (one program, in lockstep): a one-line ``ConfigError`` naming the first host that
  differs from process 0 (every process raises it)."""
  if procs.count == 1:
    return
  names = hashlib.sha256('\n'.join(it.name for it in items).encode()).hexdigest()[:16]
  job = {k: v for k, v in config.to_dict(cfg.job).items() if k not in PER_HOST}
  views = procs.gather({'inputs': [len(items), names], 'fingerprint': digest, 'job': job})
  first = views[0]
  for k, view in enumerate(views):
    if view['inputs'] != first['inputs']:
      raise config.ConfigError(
        f'--images={cfg.job.images}: process {k} lists {view["inputs"][0]} inputs (digest {view["inputs"][1]}) '
        f'but process 0 lists {first["inputs"][0]} ({first["inputs"][1]}): every host must list the same '
        'inputs (a file system or bucket every host sees)'
      )
    if view['fingerprint'] != first['fingerprint']:
      raise config.ConfigError(
        f'process {k} computes the configuration fingerprint {view["fingerprint"]}, process 0 '
        f'{first["fingerprint"]}: every host must run the same settings on the same --generator, '
        '--subspaces and --mask files'
      )
    if view['job'] != first['job']:
      keys = [f'--config.job.{key}' for key in sorted(job) if view['job'].get(key) != first['job'].get(key)]
      raise config.ConfigError(
        f'process {k} runs with other job settings than process 0 ({", ".join(keys)}): every host must run '
        'the same command'
      )


def validate(cfg: config.InvertConfig, procs: Optional[multihost.Processes] = None) -> dict:
  """Everything that can be wrong with the command, checked before anything is written: the paths, the
  models and masks, the devices and the input listing (``ConfigError`` naming the flag)."""
  j = cfg.job
  _setting('--output_dir', j.output_dir, listing.check_output_dir, j.images, j.output_dir)
  if cfg.task.align == 'face' and faces.missing():
    raise config.ConfigError(f'--config.task.align=face: {faces.missing()}')
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
