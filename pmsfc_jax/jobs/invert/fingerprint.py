"""The configuration fingerprint of a batch-job output folder (``OUT/config.json``).

Everything that changes results is fingerprinted: the config's non-``job`` sections
(``config.result_settings``: method, hyper-parameters, task, crop policy, seed, ...) and the *contents*
of the files they name (generator weights, subspace masks, inpainting mask). A changed fingerprint with
the same output folder is refused (:class:`ConfigMismatchError`, exit status 2) unless
``job.overwrite_config`` (then the old configuration's results, manifests, summary and checkpoints are
removed, ``output.py``, and every image is redone). Batch size, devices, processes, checkpoint cadence and the input list may change freely.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Iterable, Optional

import jax
import numpy as np
from absl import logging
from etils import epath

from pmsfc_jax.core import config
from pmsfc_jax.core import schema
from pmsfc_jax.io import faces
from pmsfc_jax.io import files

CONFIG_RECORD = 'config.json'
VERSION = 2  # 1: the flat config of before the config sections.
# Settings added after format 2, left out while they have the value every older folder computed with.
LATER_SETTINGS = {
  ('model', 'compute_dtype'): 'float32',
  ('loss', 'pixel_mean'): 'known',
  ('loss', 'degraded_perceptual'): True,
  ('task', 'align'): 'none',
  ('optim', 'schedule'): 'constant',  # issue 19
}


def without_later_settings(settings: dict) -> dict:
  """``config.result_settings`` output less the ``LATER_SETTINGS`` that hold their old value (a copy)."""
  out = {k: dict(v) if isinstance(v, dict) else v for k, v in settings.items()}
  for (section, key), value in LATER_SETTINGS.items():
    if isinstance(out.get(section), dict) and out[section].get(key) == value:
      del out[section][key]
  return out


class ConfigMismatchError(config.ConfigError):
  """The output directory holds results of a different configuration."""


def content_sha256(arrays: Iterable[np.ndarray]) -> str:
  """SHA-256 of arrays' dtypes, shapes and bytes, in order (file settings count by their contents)."""
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(str((a.dtype.str, a.shape)).encode())
    h.update(a.tobytes())
  return h.hexdigest()


def generator_sha256(gen) -> str:
  """:func:`content_sha256` of the generator's parameters, in the order of their tree paths."""
  leaves = jax.tree_util.tree_flatten_with_path(gen.params)[0]
  leaves = sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0]))
  return content_sha256(np.asarray(v) for _, v in leaves)


def payload(cfg: config.InvertConfig, gen, masks: Optional[np.ndarray], known: Optional[np.ndarray]) -> dict:
  """Everything that changes results, as JSON: config values, weights / masks content hashes."""
  settings = without_later_settings(config.result_settings(cfg))
  extra = {}
  if cfg.task.align == 'face':  # the resolved template and the landmark model shape every input
    settings['task']['align_template'] = config.align_template(cfg)
    extra['landmark_model_sha256'] = faces.model_digest()
  if known is not None and not np.isin(np.asarray(known), (0, 1)).all():
    # Soft masks weight pixels by k^2 since issue #13 (k^3 before): older soft-mask folders are refused.
    extra['soft_mask_weighting'] = 'k^2'
  if cfg.job.stop_tolerance > 0:  # early stop changes results (core/early_stop.py); off: no key (old folders)
    extra['early_stop'] = {'tolerance': cfg.job.stop_tolerance, 'window': cfg.job.stop_window}
  return json.loads(
    json.dumps(
      {
        **extra,
        'version': VERSION,
        'config': settings,
        'generator': {
          'config': gen.config.to_dict(),
          'params_sha256': generator_sha256(gen),
        },
        'subspace_masks_sha256': None if masks is None else content_sha256([np.asarray(masks)]),
        'inpainting_mask_sha256': None if known is None else content_sha256([np.asarray(known)]),
      },
      sort_keys=True,
      default=str,
    )
  )


def digest(p: dict) -> str:
  return hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest()[:16]


def _differences(old: dict, new: dict) -> str:
  a, b = schema.flatten(old), schema.flatten(new)
  diffs = [f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
  if old.get('version') != new.get('version'):
    diffs.insert(0, f'written by an older version of the job (fingerprint format {old.get("version")})')
  return '; '.join(diffs[:12]) or 'unknown'


def check(out_dir: epath.Path, p: dict, overwrite: bool, is_writer: bool, clean: Callable[[], None]) -> str:
  """Records ``p`` in ``OUT/config.json`` or checks it against the recorded one; returns its digest.

  With ``overwrite`` and a different record, the writer calls ``clean()`` (removes the old results) and
  only then records ``p``: a kill in between leaves the old record, so the next run cleans again.
  """
  d = digest(p)
  record_path = out_dir / CONFIG_RECORD
  if record_path.exists():
    try:
      old = json.loads(record_path.read_text())
      old = old if isinstance(old, dict) else {}
    except ValueError:  # a torn or edited record: its results cannot be trusted to match
      old = {}
    if old.get('fingerprint') == d:
      return d
    if not overwrite:
      raise ConfigMismatchError(
        f'{out_dir} holds results of a different configuration (fingerprint {old.get("fingerprint")} '
        f'!= {d}); differences: {_differences(old.get("payload") if isinstance(old.get("payload"), dict) else {}, p)}. Use another --output_dir, '
        f'or pass --overwrite_config to discard the old manifest and checkpoints and redo every image.'
      )
    if is_writer:
      logging.warning(
        '%s: configuration changed and --overwrite_config given: removing the old results, manifests, '
        'summary and checkpoints',
        out_dir,
      )
      clean()
  if is_writer:
    files.write_json(record_path, {'fingerprint': d, 'payload': p})
  return d
