r"""GAN train step speed (demo PGGAN, issue #7): seconds per step, jitted step vs the same step in a scan.

  python -m bench.bench_train_step                               # the shipped demo's local config
  python -m bench.bench_train_step --fmaps_base=4096 --fmaps_max=128 --scan_steps=0

Times ``core/gan.py: train_step`` (D step + G step + EMA) with and without R1, jitted and called from Python
(what ``gan.make_train_fn`` does), and, with ``--scan_steps=K``, the same plain step run K times
inside one ``lax.scan`` (the usual JAX idiom, slow on XLA:CPU: see ``gan.make_train_fn``).
Prints a markdown table and the device.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from pmsfc_jax.core import gan as training
from pmsfc_jax.models import discriminator as disc
from pmsfc_jax.models import pggan

_RES = flags.DEFINE_integer('resolution', 32, 'Resolution.')
_FB = flags.DEFINE_integer('fmaps_base', 1024, 'fmaps_base (nf(r) = min(fmaps_base // r, fmaps_max)).')
_FM = flags.DEFINE_integer('fmaps_max', 64, 'fmaps_max.')
_Z = flags.DEFINE_integer('z_dim', 512, 'Latent size.')
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Batch size.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed calls per variant (after one warm-up call).')
_SCAN = flags.DEFINE_integer('scan_steps', 2, 'If > 0, also time this many plain steps in one lax.scan.')


def _time(fn, state, images, repeats):
  state, _ = fn(state, images)
  jax.block_until_ready(state)
  t = time.perf_counter()
  for _ in range(repeats):
    state, m = fn(state, images)
  jax.block_until_ready((state, m))
  return (time.perf_counter() - t) / repeats, state


def main(argv):
  del argv
  g = pggan.GeneratorConfig(resolution=_RES.value, z_dim=_Z.value, fmaps_base=_FB.value, fmaps_max=_FM.value)
  d = disc.DiscriminatorConfig.for_generator(g)
  hp = training.GanOptim(batch_size=_BATCH.value)
  images = jnp.asarray(
    np.random.RandomState(0).randint(0, 256, (256, g.resolution, g.resolution, 3), dtype=np.uint8)
  )
  state = training.create_train_state(g, d, hp, 0)
  rows = []
  for r1 in (False, True):
    fn = jax.jit(
      functools.partial(training.train_step, g_cfg=g, d_cfg=d, hp=hp, with_r1=r1), donate_argnums=0
    )
    sec, state = _time(fn, state, images, _REPEATS.value)
    rows.append((f'jit step, R1={r1}', sec))
  if _SCAN.value > 0:
    k = _SCAN.value
    plain = functools.partial(training.train_step, g_cfg=g, d_cfg=d, hp=hp, with_r1=False)
    fn = jax.jit(lambda s, x: jax.lax.scan(lambda c, _: plain(c, x), s, None, length=k), donate_argnums=0)
    sec, state = _time(fn, state, images, 1)
    rows.append((f'lax.scan of {k} steps, R1=False (per step)', sec / k))
  lazy = rows[0][1] * (hp.r1_every - 1) / hp.r1_every + rows[1][1] / hp.r1_every
  rows.append((f'lazy R1 every {hp.r1_every} (mean per step)', lazy))
  print(f'device: {jax.devices()[0].device_kind} x{jax.device_count()}; {g}; batch {hp.batch_size}')
  print('| variant | s / step |\n|---|---|')
  for name, sec in rows:
    print(f'| {name} | {sec:.3f} |')


if __name__ == '__main__':
  app.run(main)
