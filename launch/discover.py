r"""Prior subspace discovery CLI (paper Algorithm 1): learn S, cluster the channels, write a subspace dir.

  python -m launch.discover --generator=demo --layer=3 --num_subspaces=6 --iterations=3000 \
      --batch_size=4 --affinity=paper --output_dir=/tmp/subspaces
  python -m launch.discover --self_expressive_matrix=tests/data/official/celebahq_layer3_S.npy \
      --matrix_layout=official --num_subspaces=6 --affinity=dsc --output_dir=/tmp/celebahq_subspaces

Flags given on the command line override ``--config`` (default ``launch/configs/discover.py``; use
``launch/configs/discover.py:local`` for a CPU-sized run). The output directory holds an orbax checkpoint
``result/`` (S, masks, labels, history, config), the training checkpoints ``checkpoints/`` (a rerun
resumes from there), ``S.npy``, ``masks.npy`` (R x C bool), ``labels.npy``, ``subspaces.json`` and PNGs
(losses, affinity, one exchange grid per subspace); ``pmsfc_jax.io.subspaces.load_subspaces(OUT)`` reads
it. Exit status 143: preempted (state saved; rerun to resume).
"""

from launch import flags as launch_flags
from pmsfc_jax.core import discovery_config
from pmsfc_jax.jobs import discover

NAMED = {
  'generator': 'model.generator',
  'layer': 'model.layer',
  'num_subspaces': 'cluster.num_subspaces',
  'iterations': 'optim.iterations',
  'batch_size': 'optim.batch_size',
  'affinity': 'cluster.affinity',
  'output_dir': 'job.output_dir',
  'self_expressive_matrix': 'cluster.self_expressive_matrix',
  'matrix_layout': 'cluster.matrix_layout',
  'seed': 'seed',
}


def main(argv):
  launch_flags.run_config(argv, discover.run, discovery_config.DiscoverConfig, NAMED)


if __name__ == '__main__':
  launch_flags.start(main, discovery_config.DiscoverConfig, NAMED, 'discover')
