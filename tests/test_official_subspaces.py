"""The shipped official subspaces (``--subspaces=celebahq|bedroom``): what they hold, the generator checks,
and the script that makes them (tools/make_official_subspaces.py)."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import scipy
import sklearn
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from pmsfc_jax.core import clustering
from pmsfc_jax.core import config
from pmsfc_jax.io import checkpoints
from pmsfc_jax.io import subspaces
from pmsfc_jax.models import pggan
from tests.conftest import OFFICIAL
from tests.conftest import REPO
from tests.test_clustering import planted_official
from tools import make_official_subspaces as make

# The official PGGAN architecture (fmaps 16384 / 512, z 512) at a small resolution: 512 channels at layer 3.
OFFICIAL_16 = pggan.GeneratorConfig(resolution=16, z_dim=512, fmaps_base=16384, fmaps_max=512)
MODELS = {'celebahq': 'karras2018iclr-celebahq-1024x1024', 'bedroom': 'karras2018iclr-lsun-bedroom-256x256'}


@pytest.mark.parametrize('name', sorted(MODELS))
def test_named_subspaces_partition_the_512_channels_of_layer_3(name):
  sub = subspaces.load_subspaces(name, generator=OFFICIAL_16, layer=3)
  assert (sub.layer, sub.num_subspaces, sub.num_channels, sub.S) == (3, 6, 512, None)
  assert sub.masks.dtype == bool and np.all(sub.masks.sum(axis=0) == 1)
  sizes = sub.masks.sum(axis=1)
  assert sizes.tolist() == sub.meta['sizes'] and np.all(np.diff(sizes) <= 0) and sizes.min() > 40
  np.testing.assert_array_equal(sub.masks[sub.labels, np.arange(512)], True)
  meta = sub.meta
  assert (meta['affinity'], meta['diagonal'], meta['alpha'], meta['rho'], meta['subspace_dim']) == (
    'dsc',
    'keep',
    2.0,
    0.2,
    6,
  )
  assert meta['generator'] == MODELS[name] and meta['source'].endswith(f'{name}/matrix/layer3/value50.pkl')
  prov = meta['provenance']
  assert prov['stability']['medoid_seed'] == meta['seed'] and meta['seed'] in prov['stability']['seeds']
  assert prov['licence'] == make.LICENCE and len(prov['matrix_npy_sha256']) == 64
  folder = checkpoints.resolve_asset(name, 'subspaces')
  assert (folder / 'PROVENANCE.md').exists() and not (folder / 'S.npy').exists()
  assert (folder.parent.parent / 'LICENSE-PmSFC.txt').read_text().lstrip().startswith('Apache License')


def test_mismatched_generator_is_refused_in_one_line(tiny_generator):
  with pytest.raises(config.ConfigError) as e:  # 64 channels at layer 3
    subspaces.load_subspaces('celebahq', generator=tiny_generator, layer=3)
  assert str(e.value) == (
    '--subspaces=celebahq: 6 subspaces of the 512 channels of layer 3 (made for '
    'karras2018iclr-celebahq-1024x1024), but the generator (32x32) has 64 channels at layer 3'
  )
  with pytest.raises(config.ConfigError, match=r'^--subspaces=bedroom: 6 subspaces of layer 3 \(made for '
                     r'karras2018iclr-lsun-bedroom-256x256\), but the inversion composes at layer 4 '
                     r'\(config.model.layer\)$'):  # fmt: skip
    subspaces.load_subspaces('bedroom', generator=OFFICIAL_16, layer=4)
  deep = subspaces.Subspaces(masks=np.eye(2, 512, dtype=bool), labels=None, S=None, layer=7)
  with pytest.raises(config.ConfigError, match=r'^--subspaces=x: subspaces of layer 7, but the generator '
                     r'\(16x16\) has only layers 0\.\.6$'):  # fmt: skip
    subspaces.check_fits(deep, 'x', OFFICIAL_16)
  # A generator that fits: any resolution with 512 channels at layer 3.
  assert subspaces.load_subspaces('bedroom', generator=OFFICIAL_16).num_channels == 512


@pytest.mark.parametrize('name', sorted(MODELS))
def test_shipped_labels_are_the_official_route_at_the_recorded_seed(name):
  """Re-clustering the released matrix (tests/data/official) with the recorded route and seed gives the
  shipped partition: exactly with the numpy / SciPy / scikit-learn versions that made it; elsewhere
  (ARPACK and the discretisation are not bit-reproducible across versions and BLAS) within ARI 0.95."""
  src = OFFICIAL / f'{name}_layer3_S.npy'
  sub = subspaces.load_subspaces(name)
  prov = sub.meta['provenance']
  assert hashlib.sha256(src.read_bytes()).hexdigest() == prov['matrix_npy_sha256']
  S = subspaces.load_matrix(src, 512, layout='official', diagonal='keep')
  labels, _ = clustering.cluster(S, 6, 'dsc', seed=sub.meta['seed'], diagonal='keep')
  if (np.__version__, scipy.__version__, sklearn.__version__) == (
    prov['numpy'],
    prov['scipy'],
    prov['sklearn'],
  ):
    np.testing.assert_array_equal(labels, sub.labels)
  else:
    assert adjusted_rand_score(labels, sub.labels) >= 0.95


def test_stability_and_medoid_rule():
  a, b, c = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 1, 2, 1, 2]), np.array([0, 1, 0, 1, 2, 2])
  st = make.stability({0: c, 1: b, 2: a, 3: a, 4: b})
  assert st['distinct_partitions'] == 3 and st['seeds'] == [0, 1, 2, 3, 4]
  ari = np.array(st['ari'])
  mean_to_others = (ari.sum(axis=1) - 1) / 4
  assert st['medoid_seed'] == int(np.argmax(mean_to_others))  # the first of the best (smallest seed)
  assert st['medoid_mean_ari_to_others'] == pytest.approx(mean_to_others.max(), abs=1e-4)
  assert st['seeds_with_the_medoid_partition'] == [
    s
    for s, lab in zip(st['seeds'], (c, b, a, a, b))
    if np.array_equal(lab, (c, b, a, a, b)[st['medoid_seed']])
  ]
  # Two seeds share the most central partition: the smaller one is chosen.
  tie = make.stability({5: a, 7: b, 9: b})
  assert tie['medoid_seed'] == 7 and tie['seeds_with_the_medoid_partition'] == [7, 9]


def test_script_packages_a_matrix(tmp_path):
  """The whole script on a planted official-layout matrix (3 groups of 30 channels; R = 6 still)."""
  M, _ = planted_official()
  np.save(tmp_path / 'tiny_layer3_S.npy', M)
  out = tmp_path / 'assets'
  make.main([f'--matrices={tmp_path}', f'--out={out}', '--models=tiny', '--num_seeds=3'])
  sub = subspaces.load_subspaces(out / 'tiny' / 'subspaces')
  assert (sub.num_subspaces, sub.num_channels, sub.layer) == (6, 90, 3)
  prov = sub.meta['provenance']
  assert (
    prov['matrix_npy_sha256'] == hashlib.sha256((tmp_path / 'tiny_layer3_S.npy').read_bytes()).hexdigest()
  )
  assert prov['stability']['seeds'] == [0, 1, 2] and sub.meta['seed'] == prov['stability']['medoid_seed']
  assert prov['max_change_from_init'] == pytest.approx(np.abs(M[~np.eye(90, dtype=bool)] - 1e-4).max())
  S = clustering.from_official_layout(M, 'keep')
  np.testing.assert_array_equal(clustering.cluster(S, 6, 'dsc', seed=sub.meta['seed'])[0], sub.labels)
  stab = json.loads((out / 'tiny' / 'subspaces' / 'stability.json').read_text())
  assert set(stab['routes']) == {'dsc/keep', 'dsc/zero', 'dsc_relu/keep', 'paper/keep'}
  text = (out / 'tiny' / 'subspaces' / 'PROVENANCE.md').read_text()
  assert f'--seed={sub.meta["seed"]}' in text and '| seed | ARI to the chosen partition | sizes |' in text


def test_invert_cli_refuses_subspaces_of_another_generator(tmp_path):
  """launch.invert with the shipped demo generator (64 channels at layer 3) and --subspaces=celebahq."""
  faces = tmp_path / 'faces'
  faces.mkdir()
  Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(faces / 'a.png')
  p = subprocess.run(
    [sys.executable, '-m', 'launch.invert', '--generator=demo', '--subspaces=celebahq', f'--images={faces}',
     f'--output_dir={tmp_path / "out"}', '--preset=local'],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert p.returncode == 2
  assert (
    '--subspaces=celebahq: 6 subspaces of the 512 channels of layer 3 (made for '
    'karras2018iclr-celebahq-1024x1024), but the generator (32x32) has 64 channels at layer 3\n'
  ) in p.stderr
  assert not (tmp_path / 'out' / 'manifest.jsonl').exists()
