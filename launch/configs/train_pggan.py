"""Training config of the small PGGAN demo generator (issue #7).

``get_config()``: a 32x32 generator with 128 channels (z 512), sized for an accelerator.
``get_config('local')``: the shipped demo model's settings, sized for a 2-core CPU (64 channels up to 16x16, 32 at 32x32).

  python -m launch.train_pggan --config=launch/configs/train_pggan.py:local --workdir=/tmp/train_demo
"""

import os
import pathlib

import ml_collections

_REPO = pathlib.Path(__file__).resolve().parents[2]
_SHARED = pathlib.Path(os.environ.get('PMSFC_SHARED', _REPO.parent / 'shared'))


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(
      folder=str(_SHARED / 'data' / 'celeba_small'),  # aligned CelebA 89x109 JPEGs (non-commercial terms)
      first=1, last=9000,                              # 009001-009500 are held out for evaluation
      cache=True))                                     # decoded uint8 array cached as WORKDIR/data_R.npy
  c.model = ml_collections.ConfigDict(dict(
      resolution=32, z_dim=512, fmaps_base=4096, fmaps_max=128, mbstd_group_size=4))
  c.optim = ml_collections.ConfigDict(dict(
      batch_size=32, learning_rate=2e-3, beta1=0.0, beta2=0.99, adam_eps=1e-8,
      r1_gamma=0.1, r1_every=16, ema_half_life_kimg=10.0, ema_rampup=0.05, flip=True))
  c.total_steps = 50_000
  c.steps_per_call = 50          # train steps per call of the train function (one host sync)
  c.log_every = 100
  c.sample_every = 1000
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.num_samples = 64             # fixed-z sample grid (EMA generator)
  c.sample_seed = 0

  if arg == 'local':
    c.model.fmaps_base = 1024    # nf: 64 channels at 4x4..16x16 (layer 3: 8x8x64), 32 at 32x32
    c.model.fmaps_max = 64
    c.total_steps = 20_000
    c.steps_per_call = 25
    c.log_every = 100
    c.sample_every = 500
    c.checkpoint_every = 500
  elif arg not in (None, ''):
    raise ValueError(f"unknown config variant {arg!r} (use '' or 'local')")
  return c
