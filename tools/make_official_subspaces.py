r"""Builds the shipped official subspaces ``pmsfc_jax/assets/{celebahq,bedroom}/subspaces/`` from the
self-expressive matrices the PmSFC authors released.

  python tools/make_official_subspaces.py --matrices=DIR [--out=pmsfc_jax/assets] [--num_seeds=20]

``DIR`` holds ``celebahq_layer3_S.npy`` and ``bedroom_layer3_S.npy``: the arrays pickled in
guanyuelee/PmSFC's ``bin/pggan/{celebahq,bedroom}/matrix/layer3/value50.pkl`` (float32 512 x 512, official
layout M = S^T), saved with ``numpy.save`` (the project's shared data folder has them as
``data/official/*_layer3_S.npy``). For each model and each seed 0..N-1 it runs what

  python -m launch.discover --self_expressive_matrix=DIR/<model>_layer3_S.npy --matrix_layout=official \
      --affinity=dsc --num_subspaces=6 --seed=<seed> --output_dir=<tmp> --config.job.plots=false

runs (the same library call, ``pmsfc_jax.jobs.discover.run``, in this process): the route of the official
inversion script ``PmSFC.py`` (``thrC`` + ``post_proC`` on the raw matrix, stored diagonal kept; see
``pmsfc_jax/core/clustering.py``). The seed is chosen by a stated rule: the MEDOID, the seed whose
partition has the highest mean adjusted Rand index (ARI) to the partitions of the other seeds (ties: the
more frequent partition, then the smallest seed). The packaging step copies that run's ``masks.npy`` and
``labels.npy``, writes its ``subspaces.json`` with the provenance added (the matrix's sha256 instead of
S.npy, the rule, the stability over the seeds) and a ``PROVENANCE.md`` with the ARI table and, for
comparison, the stability of the other routes ('dsc' with the diagonal zeroed, 'dsc_relu', 'paper').

Spectral clustering (ARPACK, k-means / discretisation) is not bit-reproducible across BLAS, SciPy or
scikit-learn versions: the shipped files, not a re-run elsewhere, are the reference (the versions used
are recorded). ``tests/test_official_subspaces.py`` checks the shipped labels against a re-clustering
when the matrices are at hand.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import itertools
import json
import pathlib
import platform
import shutil
import tempfile

import numpy as np
import scipy
import sklearn
from sklearn.metrics import adjusted_rand_score

from pmsfc_jax.core import clustering
from pmsfc_jax.core import config
from pmsfc_jax.core import presets
from pmsfc_jax.io import files
from pmsfc_jax.io import subspaces
from pmsfc_jax.jobs import discover

REPO = pathlib.Path(__file__).resolve().parents[1]
R = 6
OFFICIAL_REPO = 'https://github.com/guanyuelee/PmSFC'
OFFICIAL_COMMIT = 'f26cbb46ba86ba0ee7c2fced982ac07307f3108e'
# The official PGGAN each matrix was learnt on (NVIDIA's progressive_growing_of_gans release).
GENERATORS = {
  'celebahq': 'karras2018iclr-celebahq-1024x1024',
  'bedroom': 'karras2018iclr-lsun-bedroom-256x256',
}
COMPARE = (('dsc', 'keep'), ('dsc', 'zero'), ('dsc_relu', 'keep'), ('paper', 'keep'))
LICENCE = (
  'Apache License 2.0: the matrices are files of the PmSFC repository (guanyuelee/PmSFC, LICENSE; its '
  'copyright line is the unfilled template "Copyright [yyyy] [name of copyright owner]"), by the PmSFC '
  'authors (Guanyue Li, Qianfen Jiao, Sheng Qian, Si Wu, Hau-San Wong). The masks are derived from them. '
  "A copy of the licence: pmsfc_jax/assets/LICENSE-PmSFC.txt (the repository's LICENSE at that commit, unchanged)."
)


def sha256(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def discover_run(matrix: pathlib.Path, seed: int, out: pathlib.Path) -> subspaces.Subspaces:
  """The library call of the launch.discover command in the module docstring."""
  overrides = {
    'cluster.self_expressive_matrix': str(matrix),
    'cluster.matrix_layout': 'official',
    'cluster.affinity': 'dsc',
    'cluster.num_subspaces': R,
    'seed': seed,
    'job.output_dir': str(out),
    'job.plots': False,
  }
  return discover.run(config.override(presets.discover(), overrides))


def stability(labels: dict[int, np.ndarray]) -> dict:
  """Pairwise ARI between the seeds' partitions, distinct partitions, the medoid seed."""
  seeds = sorted(labels)
  n = len(seeds)
  ari = np.ones((n, n))
  for i, j in itertools.combinations(range(n), 2):
    ari[i, j] = ari[j, i] = adjusted_rand_score(labels[seeds[i]], labels[seeds[j]])
  # order_by_size makes a label vector a pure function of its partition: equal vectors = equal partitions.
  key = {s: labels[s].tobytes() for s in seeds}
  count = collections.Counter(key.values())
  mean_to_others = {s: float((ari[i].sum() - 1) / max(n - 1, 1)) for i, s in enumerate(seeds)}
  medoid = min(seeds, key=lambda s: (-round(mean_to_others[s], 9), -count[key[s]], s))
  m = seeds.index(medoid)
  off = ari[~np.eye(n, dtype=bool)] if n > 1 else np.ones(1)
  return {
    'seeds': seeds,
    'ari': ari.round(4).tolist(),
    'mean_ari': float(off.mean()),
    'min_ari': float(off.min()),
    'distinct_partitions': len(count),
    'medoid_seed': medoid,
    'medoid_mean_ari_to_others': mean_to_others[medoid],
    'seeds_with_the_medoid_partition': [s for s in seeds if key[s] == key[medoid]],
    'seeds_with_ari_ge_0.9_to_the_medoid': int(np.sum(ari[m] >= 0.9)),
    'min_ari_to_the_medoid': float(ari[m].min()),
    'sizes_by_seed': {s: np.bincount(labels[s], minlength=R).tolist() for s in seeds},
  }


def compare_routes(S_official: np.ndarray, seeds: list[int]) -> dict:
  out = {}
  for route, diagonal in COMPARE:
    S = clustering.from_official_layout(S_official, diagonal)
    labels = {s: clustering.cluster(S, R, route, s, diagonal=diagonal)[0] for s in seeds}
    st = stability(labels)
    out[f'{route}/{diagonal}'] = {
      k: st[k] for k in ('mean_ari', 'min_ari', 'distinct_partitions', 'medoid_seed')
    }
    out[f'{route}/{diagonal}']['medoid_sizes'] = st['sizes_by_seed'][st['medoid_seed']]
    out[f'{route}/{diagonal}']['medoid_labels'] = labels[st['medoid_seed']].tolist()
  return out


def provenance_md(model: str, info: dict, st: dict, routes: dict) -> str:
  g = info['provenance']
  seeds = st['seeds']
  lines = [
    f'# Official PmSFC subspaces: {model} (layer 3, R = {R}, {info["channels"]} channels)',
    '',
    f'* Source: `{g["official_file"]}` of {OFFICIAL_REPO} (commit `{OFFICIAL_COMMIT}`), the layer-3 '
    f"self-expressive matrix the PmSFC authors learnt on `{info['generator']}` (NVIDIA's official PGGAN). "
    f'As `.npy` (float32 512 x 512, official layout M = S^T): sha256 `{g["matrix_npy_sha256"]}` '
    '(not in the package; the tests have it: tests/data/official/).',
    f'* Licence: {LICENCE}',
    '* The matrix is BARELY TRAINED: an early snapshot of an official training run (the training script '
    'saves its matrix every `--report_model` iterations, discover_subspace.py:281-284), at most '
    f'{g["max_change_from_init"]:.4g} from its constant 1e-4 init (discover_subspace.py:114), i.e. about '
    f"{g['max_change_from_init'] / 1e-4:.0f} Adam steps of lr 1e-4, against the paper's 3000 iterations. "
    'These masks are what the official inversion script builds from it (up to its unseeded clustering).',
    f'* Made by `python tools/make_official_subspaces.py --matrices=DIR` (numpy {g["numpy"]}, scipy '
    f'{g["scipy"]}, scikit-learn {g["sklearn"]}, {g["platform"]}). Each seed runs:',
    '',
    f'      {g["command"]}',
    '',
    "* Route: 'dsc' with the stored diagonal kept = the official inversion script PmSFC.py:89-95 "
    '(thrC(M, 0.2), post_proC(K=6, d=6, power 2.0 as its command line passes), spectral clustering with '
    "assign_labels='discretize'); seeded here (the official call has no random_state).",
    f'* Seed rule: {g["seed_rule"]} -> seed {st["medoid_seed"]} (mean ARI to the other seeds '
    f'{st["medoid_mean_ari_to_others"]:.3f}; the same partition for seeds '
    f'{st["seeds_with_the_medoid_partition"]}; {st["seeds_with_ari_ge_0.9_to_the_medoid"]}/{len(seeds)} '
    f'seeds within ARI 0.9 of it, the farthest at {st["min_ari_to_the_medoid"]:.3f}).',
    f'* Sizes: {info["sizes"]} (subspace 0 the largest).',
    '',
    f'## Stability over seeds {seeds[0]}..{seeds[-1]} (the chosen route)',
    '',
    f'Mean ARI between seeds {st["mean_ari"]:.3f}, min {st["min_ari"]:.3f}, '
    f'{st["distinct_partitions"]} distinct partitions. ARI of each seed to the chosen one and sizes:',
    '',
    '| seed | ARI to the chosen partition | sizes |',
    '|---|---|---|',
  ]
  m = seeds.index(st['medoid_seed'])
  lines += [f'| {s} | {st["ari"][m][i]:.3f} | {st["sizes_by_seed"][s]} |' for i, s in enumerate(seeds)]
  lines += [
    '',
    '## The other routes (same seeds; not shipped)',
    '',
    '| route / diagonal | mean ARI between seeds | min | distinct partitions | ARI of its medoid to the shipped |',
    '|---|---|---|---|---|',
  ]
  shipped = np.asarray(routes['dsc/keep']['medoid_labels'])
  for name, r in routes.items():
    ari = adjusted_rand_score(shipped, np.asarray(r['medoid_labels']))
    lines.append(
      f'| {name} | {r["mean_ari"]:.3f} | {r["min_ari"]:.3f} | {r["distinct_partitions"]} | {ari:.3f} |'
    )
  lines += [
    '',
    "'dsc/zero' zeroes the 1e-4 diagonal before the threshold (a deviation from PmSFC.py); 'dsc_relu' is "
    "the route discover_subspace.py saves its masks with (relu, rows of M); 'paper' is (|S|+|S^T|)/2 with "
    'k-means spectral clustering (Algorithm 1 as written). See docs/discovery.md. Every number above '
    "(the full ARI matrix, the sizes per seed, each route's medoid labels) is in stability.json.",
    '',
  ]
  return '\n'.join(lines)


def package(model: str, matrix: pathlib.Path, seeds: list[int], out_root: pathlib.Path, work: pathlib.Path):
  runs = {s: discover_run(matrix, s, work / model / f'seed{s}') for s in seeds}
  st = stability({s: runs[s].labels for s in seeds})
  seed = st['medoid_seed']
  raw = files.load_npy(matrix)
  off = ~np.eye(raw.shape[0], dtype=bool)
  chosen = work / model / f'seed{seed}'
  info = json.loads((chosen / 'subspaces.json').read_text())
  official_file = f'bin/pggan/{model}/matrix/layer3/value50.pkl'
  command = (
    f'python -m launch.discover --self_expressive_matrix=DIR/{matrix.name} --matrix_layout=official '
    f'--affinity=dsc --num_subspaces={R} --seed={seed} --output_dir=OUT --config.job.plots=false'
  )
  info.update(
    source=f'{OFFICIAL_REPO} {official_file}',
    generator=GENERATORS.get(model),
    provenance={
      'official_file': official_file,
      'official_commit': OFFICIAL_COMMIT,
      'matrix_npy_sha256': sha256(matrix),
      'max_change_from_init': float(np.abs(raw[off] - np.float32(1e-4)).max()),
      'licence': LICENCE,
      'command': command,
      'seed_rule': (
        f'medoid of seeds {seeds[0]}..{seeds[-1]}: the highest mean ARI to the other seeds '
        '(ties: the more frequent partition, then the smallest seed)'
      ),
      'stability': {k: v for k, v in st.items() if k not in ('ari', 'sizes_by_seed')},
      'numpy': np.__version__,
      'scipy': scipy.__version__,
      'sklearn': sklearn.__version__,
      'platform': platform.platform(terse=True),
    },
  )
  routes = compare_routes(raw, seeds)
  if routes['dsc/keep']['medoid_labels'] != runs[seed].labels.tolist():
    raise AssertionError(f'{model}: clustering.cluster and discover.run disagree for seed {seed}')
  dest = out_root / model / 'subspaces'
  dest.mkdir(parents=True, exist_ok=True)
  for name in ('masks.npy', 'labels.npy'):
    shutil.copyfile(chosen / name, dest / name)
  files.write_json(dest / 'subspaces.json', info, indent=2)
  files.atomic_write_bytes(dest / 'PROVENANCE.md', provenance_md(model, info, st, routes).encode())
  files.write_json(dest / 'stability.json', {'chosen': st, 'routes': routes}, indent=1)
  return dest, st


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--matrices', required=True, help='folder with <model>_layer3_S.npy (official layout)')
  p.add_argument('--out', default=str(REPO / 'pmsfc_jax' / 'assets'), help='package assets folder')
  p.add_argument('--models', default=','.join(GENERATORS))
  p.add_argument('--num_seeds', type=int, default=20)
  args = p.parse_args(argv)
  seeds = list(range(args.num_seeds))
  with tempfile.TemporaryDirectory() as tmp:
    for model in args.models.split(','):
      matrix = pathlib.Path(args.matrices) / f'{model}_layer3_S.npy'
      dest, st = package(model, matrix, seeds, pathlib.Path(args.out), pathlib.Path(tmp))
      print(
        f'{model}: seed {st["medoid_seed"]} (mean ARI {st["medoid_mean_ari_to_others"]:.3f}, '
        f'{st["distinct_partitions"]} distinct partitions over {len(seeds)} seeds) -> {dest}'
      )


if __name__ == '__main__':
  main()
