"""No default path points outside the repository: every string default of every config preset, every
launch flag default and every string literal in the code of pmsfc_jax/ and launch/ either names no path
or a path inside the working directory (the repository), so every command runs on a clean clone."""

import ast
import itertools
import pathlib

import pytest
from absl import flags

from pmsfc_jax.core import config
from pmsfc_jax.core import presets
from tests.conftest import REPO


def outside(value: str) -> bool:
  """True if ``value`` looks like a path (or URL) that does not lie inside the repository."""
  if '://' in value:
    return True
  if not value or not ('/' in value or '\\' in value or value.startswith(('.', '~'))):
    return False  # a name ('demo', 'celebahq', 'paper'), not a path
  path = pathlib.Path(value).expanduser()
  resolved = (path if path.is_absolute() else REPO / path).resolve()
  return resolved != REPO and REPO not in resolved.parents


def strings(tree, prefix=''):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from strings(v, f'{prefix}{k}.')
  elif isinstance(tree, (list, tuple)):
    for i, v in enumerate(tree):
      yield from strings(v, f'{prefix}{i}.')
  elif isinstance(tree, str):
    yield prefix.rstrip('.'), tree


def test_outside():
  assert [outside(v) for v in ('demo', '', 'demo_out', 'pmsfc_jax/assets/demo', '../shared/x.png')] == [
    False,
    False,
    False,
    False,
    True,
  ]
  assert outside('/etc/passwd') and outside('gs://bucket/x') and outside('~/data') and outside('..')


def _invert_presets():
  """Every combination the presets accept ('paper' is PmSFC's own: it refuses 'mganprior', 'fast')."""
  for method, task, extra in itertools.product(config.METHODS, config.TASKS, (None, *presets.MODIFIERS)):
    if not (extra == 'paper' and method == 'mganprior'):
      yield f'invert:{method},{task}{"," + extra if extra else ""}'


PRESETS = [
  *_invert_presets(),
  *(f'{name}:{arg}' for name in ('demo', 'discover', 'train_pggan') for arg in ('', 'local')),
  *(f'reproduce:{arg}' for arg in ('', 'local')),
]


@pytest.mark.parametrize('preset', PRESETS)
def test_preset_defaults_stay_inside_the_repository(preset):
  name, arg = preset.split(':')
  cfg = getattr(presets, name)(arg or None)
  bad = {k: v for k, v in strings(config.to_dict(cfg)) if outside(v)}
  assert not bad, f'presets.{name}({arg!r}) defaults outside the repository: {bad}'


def test_training_data_folder_is_required(tmp_path):
  from pmsfc_jax.jobs import train_pggan

  assert presets.train_pggan().data.folder == ''
  with pytest.raises(
    config.ConfigError, match=r'^config.data.folder is required: the folder of aligned CelebA'
  ):
    train_pggan.train({'job': {'total_steps': 2, 'steps_per_call': 2}}, tmp_path / 'w')


def test_launch_flag_defaults_stay_inside_the_repository():
  import launch.convert  # noqa: F401  (each command defines its flags on import)
  import launch.demo  # noqa: F401
  import launch.discover  # noqa: F401
  import launch.edit  # noqa: F401
  import launch.evaluate  # noqa: F401
  import launch.generate  # noqa: F401
  import launch.invert  # noqa: F401
  import launch.reproduce  # noqa: F401
  import launch.train_pggan  # noqa: F401

  ours = [f for m, fl in flags.FLAGS.flags_by_module_dict().items() if m.startswith('launch') for f in fl]
  checked = {f.name: f.default for f in ours if isinstance(f.default, str)}
  assert {'generator', 'inverted', 'source', 'workdir'} <= {f.name for f in ours}
  bad = {n: v for n, v in checked.items() if outside(v)}
  assert not bad, bad


def _code_strings(path):
  """String literals of a module that are not docstrings."""
  tree = ast.parse(path.read_text())
  docs = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
      first = node.body[0]
      if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        docs.add(id(first.value))
  for node in ast.walk(tree):
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
      yield node.lineno, node.value


SOURCES = sorted(p for d in ('pmsfc_jax', 'launch') for p in (REPO / d).rglob('*.py'))


@pytest.mark.parametrize(
  'path',
  SOURCES,
  ids=lambda p: str(p.relative_to(REPO)),
)
def test_no_path_literal_outside_the_repository(path):
  bad = [(n, v) for n, v in _code_strings(path) if v.startswith(('../', '..\\')) or '/shared/' in v]
  assert not bad, f'{path.relative_to(REPO)}: {bad}'
