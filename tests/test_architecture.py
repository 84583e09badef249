"""The architecture as rules that cannot silently rot (docs/architecture.md).

* Rooms: ``pmsfc_jax/models`` < ``core`` < ``io`` < ``evaluation`` < ``jobs``; a module imports only its own
  room and the rooms below (``models`` nothing of the library but ``models``). The library never imports
  ``launch``, ``weights_conversion`` or torch.
* ``launch/`` is thin: it imports only the library, absl and ml_collections; its scripts define ``main``
  and nothing else (``flags.py`` is the flag plumbing), ``launch/configs/*`` only ``get_config``.
* Imports sit at module top (optional heavy dependencies excepted), never in ``except ImportError``.
* No module over 400 lines; every launch module imports together in one process.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
ROOMS = ('models', 'core', 'io', 'evaluation', 'jobs')
MAX_LINES = 400
# (file, module) pairs allowed to import inside a function: optional heavy dependencies.
LAZY_IMPORTS = {
  ('pmsfc_jax/jobs/plots.py', 'matplotlib'),
  ('pmsfc_jax/jobs/plots.py', 'matplotlib.pyplot'),
  ('weights_conversion/mganprior_pth.py', 'torch'),
  ('pmsfc_jax/io/faces.py', 'dlib'),  # the optional `align` extra
}
LAUNCH_MAY_IMPORT = {
  'pmsfc_jax',
  'weights_conversion',
  'launch',
  'absl',
  'ml_collections',
  'os',
  'sys',
  'typing',
  '__future__',
}


def _sources(*folders):
  return sorted(p for folder in folders for p in (REPO / folder).rglob('*.py'))


def _rel(path):
  return str(path.relative_to(REPO))


def _imports(tree):
  """(module, node, inside a function) of every import statement."""
  out = []

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
      if isinstance(child, ast.Import):
        out.extend((a.name, child, in_function) for a in child.names)
      elif isinstance(child, ast.ImportFrom) and child.level == 0:
        out.extend(
          (f'{child.module}.{a.name}' if child.module == 'pmsfc_jax' else child.module, child, in_function)
          for a in child.names
        )
      visit(child, inner)

  visit(tree, False)
  return out


def _room(module):
  parts = module.split('.')
  return parts[1] if len(parts) > 1 and parts[0] == 'pmsfc_jax' and parts[1] in ROOMS else None


@pytest.mark.parametrize('path', _sources('pmsfc_jax'), ids=_rel)
def test_library_imports_point_down(path):
  own = _room('.'.join(path.relative_to(REPO).with_suffix('').parts))
  for module, node, _ in _imports(ast.parse(path.read_text())):
    top = module.split('.')[0]
    assert top not in ('launch', 'weights_conversion', 'torch', 'tests'), (
      f'{_rel(path)}:{node.lineno} {module}'
    )
    target = _room(module)
    if own is not None and target is not None:
      assert ROOMS.index(target) <= ROOMS.index(own), (
        f'{_rel(path)}:{node.lineno}: the {own} room imports {module} (rooms import downwards only: '
        f'{" < ".join(ROOMS)})'
      )
    if own is not None and top == 'pmsfc_jax':
      assert target is not None, f'{_rel(path)}:{node.lineno}: {module} is not in a room'


@pytest.mark.parametrize('path', _sources('pmsfc_jax', 'launch', 'weights_conversion', 'examples'), ids=_rel)
def test_imports_at_module_top(path):
  tree = ast.parse(path.read_text())
  for module, node, in_function in _imports(tree):
    assert not in_function or (_rel(path), module) in LAZY_IMPORTS, (
      f'{_rel(path)}:{node.lineno}: import {module} inside a function (move it to the top)'
    )
  for node in ast.walk(tree):
    if isinstance(node, ast.ExceptHandler) and isinstance(node.type, ast.Name):
      assert node.type.id != 'ImportError', f'{_rel(path)}:{node.lineno}: an except ImportError fallback'


@pytest.mark.parametrize(
  'path', _sources('pmsfc_jax', 'launch', 'weights_conversion', 'examples', 'bench', 'tools'), ids=_rel
)
def test_no_module_over_the_line_cap(path):
  n = len(path.read_text().splitlines())
  assert n <= MAX_LINES, f'{_rel(path)} has {n} lines (at most {MAX_LINES}: split it by what it does)'


@pytest.mark.parametrize('path', _sources('launch'), ids=_rel)
def test_launch_is_thin(path):
  tree = ast.parse(path.read_text())
  for module, node, _ in _imports(tree):
    assert module.split('.')[0] in LAUNCH_MAY_IMPORT, f'{_rel(path)}:{node.lineno}: launch/ imports {module}'
  if path.name in ('flags.py', '__init__.py'):
    return
  allowed = {'get_config'} if path.parent.name == 'configs' else {'main'}
  for node in tree.body:
    assert not isinstance(node, ast.ClassDef), (
      f'{_rel(path)}: a class in launch/ (library code goes in pmsfc_jax)'
    )
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      assert node.name in allowed, f'{_rel(path)}: def {node.name} (launch scripts define only {allowed})'


def test_every_launch_module_imports_together():
  modules = [
    f'launch.{".".join(p.relative_to(REPO / "launch").with_suffix("").parts)}'
    for p in _sources('launch')
    if p.name != '__init__.py'
  ]
  assert {'launch.invert', 'launch.discover', 'launch.generate', 'launch.evaluate', 'launch.flags'} <= set(
    modules
  )
  subprocess.run([sys.executable, '-c', f'import {", ".join(modules)}'], cwd=REPO, check=True, timeout=300)
