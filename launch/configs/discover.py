"""Config of prior subspace discovery (paper Algorithm 1, Eq. 3-5) and the clustering into subspaces.

``get_config()``: the paper's settings (layer 3, Adam lr 1e-4 betas (0.9, 0.999), 3000 iterations,
lambda 10, mu 1) with the official code's batch of 4, mean reductions and S init 1e-4.
``get_config('local')``: a small CPU variant (fewer iterations, larger learning rate) for the 32x32 demo
generator on a laptop-class CPU.

  python -m launch.discover --config=launch/configs/discover.py:local --generator=demo --output_dir=OUT
  python -m launch.discover --config.lr=1e-3 ...   # any key is overridable
"""

import ml_collections


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  # What to run on.
  c.generator = ''                 # generator checkpoint dir or shipped name ('demo')
  c.layer = 3                      # split layer (paper: 3, the first 8x8 conv)
  c.output_dir = ''
  c.self_expressive_matrix = ''    # S.npy: skip training, cluster this matrix
  c.matrix_layout = 'paper'        # 'official' transposes a matrix saved by the official code (M = S^T)
  c.seed = 0                       # latents of training, spectral clustering, exchange-grid latents
  # Training (Eq. 5).
  c.iterations = 3000
  c.batch_size = 4                 # official code: 4 (multiple of the number of devices)
  c.lr = 1e-4
  c.b1 = 0.9
  c.b2 = 0.999
  c.eps = 1e-8
  c.lam = 10.0                     # lambda: weight of L_recD
  c.mu = 1.0                       # mu: weight of ||S||_1
  c.reduction = 'mean'             # 'mean' (official) or 'sum' (the paper's norms)
  c.init_value = 1e-4              # official init of S (off-diagonal; the diagonal is always 0)
  c.log_every = 100                # steps per chunk (one log line, host sync)
  c.steps_per_call = 0             # steps per jitted lax.scan; 0 = auto: 1 on CPU (pmsfc_jax/loops.py)
  c.checkpoint_every = 500         # orbax checkpoint of S + Adam state (resume)
  # Clustering.
  c.num_subspaces = 6              # R
  c.affinity = 'paper'             # 'paper' ((|S|+|S^T|)/2) or 'dsc' (official post-processing)
  c.rho = 0.2                      # dsc: fraction of each column's L1 mass kept
  c.subspace_dim = 6               # dsc: d, the SVD keeps rank d*R+1
  c.alpha = 2.0                    # dsc: power of the affinity
  # Pictures.
  c.plots = True
  c.exchange_samples = 4           # N: exchange grids are N x N

  if arg == 'local':
    c.iterations = 300
    c.lr = 1e-3
    c.log_every = 50
    c.checkpoint_every = 100
  elif arg not in (None, ''):
    raise ValueError(f"unknown config variant {arg!r} (use '' or 'local')")
  return c
