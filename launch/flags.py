"""Command-line plumbing of the launch scripts: every shared flag is defined here, once.

So every launch module can be imported into one process. A script declares the shared flags it accepts
(``NAMED``: flag name -> the config path it sets, or None for a plain argument of the job) and runs
``app.run(main, flags_parser=parser(...))``; its ``main`` calls :func:`config` (typed config from
``--config`` + the named flags) or :func:`given` (the flags that were given), then one library call
through :func:`call`.

The parser puts the script's default config file (``launch/configs/<script>.py``, with the presets named
by ``--method`` / ``--task`` / ``--preset``) in front when no ``--config`` is given, so that
``--config.section.key=value`` overrides work without it. Old spellings follow the library's rule
(``pmsfc_jax/core/schema.py``): ``--lr=0.5`` becomes ``--config.optim.lr=0.5`` and ``--config.lr=0.5``
becomes ``--config.optim.lr=0.5`` with a warning naming the new spelling; removed ones are refused naming
the reason. A shared flag given to a script that does not take it is a usage error naming it.

Usage errors (unknown or malformed flags, bad config values, ``app.UsageError``, the library's
``ConfigError``) print ONE line on stderr (no traceback, no help text) and exit with
``exit_codes.USAGE`` (2), distinct from 1 (some images failed) and 143 (preempted).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Mapping, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from pmsfc_jax.core import config as config_lib
from pmsfc_jax.core import discovery_config
from pmsfc_jax.core import schema
from pmsfc_jax.jobs import exit_codes
from pmsfc_jax.jobs import logs

FLAGS = flags.FLAGS
CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')

CONFIG = config_flags.DEFINE_config_file(
  'config',
  None,
  "Config file[:presets] (default: the command's launch/configs/<command>.py with the presets "
  'of --method/--task/--preset); then --config.section.key=value overrides.',
)
flags.DEFINE_string('generator', None, 'Generator checkpoint directory or shipped name (e.g. demo).')
flags.DEFINE_string(
  'subspaces',
  None,
  'launch.discover output directory or shipped name: demo, celebahq, bedroom (the official generators); '
  'not needed with --method=mganprior.',
)
flags.DEFINE_string('images', None, 'Directory (recursive), glob, or text file listing images.')
flags.DEFINE_string('output_dir', None, 'Output directory.')
flags.DEFINE_string('output', None, 'Output file / directory.')
flags.DEFINE_enum('method', None, list(config_lib.METHODS), 'Inversion method (a preset).')
flags.DEFINE_enum('task', None, list(config_lib.TASKS), 'Task (a preset).')
flags.DEFINE_string('preset', None, "Extra config presets, e.g. 'fast' or 'local' (without --config).")
flags.DEFINE_string('mask', None, 'Inpainting mask PNG (white = hole).')
flags.DEFINE_integer('factor', None, 'Super-resolution factor (inputs are resolution/factor).')
flags.DEFINE_integer('iterations', None, 'Optimisation steps.')


class _BatchSizeParser(flags.IntegerParser):
  """An int, or ``auto`` (stored as 0): the largest per-device batch that fits (launch.invert, launch.plan)."""

  def parse(self, argument):
    if isinstance(argument, str) and argument.strip().lower() == 'auto':
      return 0
    return super().parse(argument)

  def flag_type(self):
    return 'int or auto'


flags.DEFINE(
  _BatchSizeParser(lower_bound=0),
  'batch_size',
  None,
  'Batch size, or auto: the largest per-device batch whose compiled step fits the device memory '
  '(launch.invert, launch.plan; on CPU the default).',
  serializer=flags.ArgumentSerializer(),
)
flags.DEFINE_integer('num_images', None, 'Use the first N images of --images.')
flags.DEFINE_integer('num_codes', None, 'K codes per subspace (pmsfc) or N codes (mganprior).')
flags.DEFINE_integer('checkpoint_every', None, 'Save the state every N steps (0: never).')
flags.DEFINE_integer('seed', None, 'Random seed.')
flags.DEFINE_integer('layer', None, 'Split layer of G = G2 o G1 (paper: 3).')
flags.DEFINE_integer('num_subspaces', None, 'Number of subspaces R.')
flags.DEFINE_enum('affinity', None, list(discovery_config.AFFINITIES), 'Affinity / clustering route.')
flags.DEFINE_string('self_expressive_matrix', None, 'S.npy to cluster instead of training.')
flags.DEFINE_enum('matrix_layout', None, ['paper', 'official'], 'Layout of --self_expressive_matrix.')
flags.DEFINE_bool('distributed', None, 'Multi-host: call jax.distributed.initialize().')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (default: env / cluster detection).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (--distributed).')
flags.DEFINE_integer('process_id', None, 'This process index (--distributed).')
flags.DEFINE_bool(
  'overwrite_config',
  None,
  'Accept a changed configuration in an existing output directory: '
  'discard its manifest/checkpoints and redo every image.',
)
flags.DEFINE_bool('retry_failed', None, 'Retry images whose manifest line is an error.')
flags.DEFINE_bool('force', None, 'Overwrite an existing output.')
# A PGGAN architecture (launch.convert: expected, checked against the file; launch.plan: built, the
# official one at --resolution by default).
flags.DEFINE_integer('resolution', None, 'Generator resolution.')
flags.DEFINE_integer('z_dim', None, 'Latent size (official: 512).')
flags.DEFINE_integer('fmaps_base', None, 'nf(res) = min(fmaps_base // res, fmaps_max) (official: 16384).')
flags.DEFINE_integer('fmaps_max', None, 'Maximum channel count (official: 512).')
flags.DEFINE_enum('fused_scale', None, ['true', 'false', 'auto'], 'Fused upsampling convs (official: true).')
ARCHITECTURE = ('resolution', 'z_dim', 'fmaps_base', 'fmaps_max', 'fused_scale')
SHARED = (
  'config',
  'generator',
  'subspaces',
  'images',
  'output_dir',
  'output',
  'method',
  'task',
  'preset',
  'mask',
  'factor',
  'iterations',
  'batch_size',
  'num_images',
  'num_codes',
  'checkpoint_every',
  'seed',
  'layer',
  'num_subspaces',
  'affinity',
  'self_expressive_matrix',
  'matrix_layout',
  'distributed',
  'coordinator_address',
  'num_processes',
  'process_id',
  'overwrite_config',
  'retry_failed',
  'force',
  *ARCHITECTURE,
)
PRESET_FLAGS = ('method', 'task', 'preset')
_STATE = {'default_config': False}


def _fail(message: str) -> None:
  """A usage error: one line on stderr (no traceback, no help text), exit status ``exit_codes.USAGE``."""
  lines = [line.strip() for line in str(message).splitlines() if line.strip()]
  if any(line.startswith('Traceback') for line in lines):  # config_flags embeds the config file's
    lines = [lines[0].rstrip(':'), lines[-1]]  # traceback: keep the flag and the final error only
  message = '; '.join(lines)
  sys.stderr.write(f'FATAL usage error: {message} (--helpshort lists the flags)\n')
  sys.exit(exit_codes.USAGE)


def _legacy(cls: Optional[type], args: list[str], named: Mapping[str, Any]) -> tuple[list[str], list[str]]:
  """(args with old ``--config.KEY`` spellings rewritten, overrides translated from old flags)."""
  legacy = getattr(cls, 'LEGACY', {})
  types = schema.paths(cls) if cls is not None else {}
  kept, appended, args = [], [], list(args)
  while args:
    arg = args.pop(0)
    name, eq, value = arg[2:].partition('=')
    key = name[2:] if name.startswith('no') and name[2:] in legacy and name not in FLAGS else name
    if not arg.startswith('--') or key in named or (key not in legacy and not name.startswith('config.')):
      kept.append(arg)
    elif name.startswith('config.'):
      try:
        kept.append(f'--config.{schema.translate_key(cls, name[7:])}{eq}{value}')
      except schema.ConfigError as e:
        _fail(str(e))
    elif isinstance(legacy[key], schema.Removed):
      _fail(f'--{key} no longer exists: {legacy[key].why}')
    else:
      new = legacy[key]
      if types[new] is bool and not eq:
        value = 'false' if key != name else 'true'
      elif not eq and args:
        value = args.pop(0)
      logging.warning('--%s is deprecated: use --config.%s', name, new)
      appended.append(f'--config.{new}={value}')
  return kept, appended


def parser(
  cls: Optional[type], named: Mapping[str, Any], script: Optional[str] = None, presets: Sequence[str] = ()
) -> Callable[[list[str]], list[str]]:
  """The ``flags_parser`` of a launch script (see the module docstring).

  ``cls``: the config class of ``--config`` (None: the script takes no config); ``script``: the name of
  its default ``launch/configs/<script>.py`` (None: ``--config`` is required); ``presets``: the named
  flags whose values are presets of that file.
  """

  def parse(argv: list[str]) -> list[str]:
    args, appended = _legacy(cls, argv[1:], named)
    given = any(a == '--config' or a.startswith('--config=') for a in args)
    _STATE['default_config'] = not given and script is not None
    if _STATE['default_config']:
      values = []
      for i, a in enumerate(args):
        name, eq, value = a[2:].partition('=')
        if a.startswith('--') and name in presets:
          values += (value if eq else (args[i + 1] if i + 1 < len(args) else '')).split(',')
      tokens = ','.join(v for v in values if v)
      args.insert(0, f'--config={os.path.join(CONFIGS, script + ".py")}' + (f':{tokens}' if tokens else ''))
    sys.argv = [argv[0], *args, *appended]  # config_flags reads its overrides from sys.argv.
    try:
      return FLAGS(list(sys.argv))
    except flags.Error as e:
      _fail(str(e))
    except (AttributeError, KeyError) as e:  # config_flags: an override of a key the config lacks.
      _fail(f'unknown config key {e}')
    except (ValueError, OSError) as e:  # a config file that cannot be loaded or an unknown preset
      _fail(f'--config: {e}')

  return parse


def check_flags(accepted: Sequence[str]) -> None:
  """A usage error for every shared flag given that this command does not take."""
  for name in SHARED:
    if FLAGS[name].present and name not in accepted:
      raise app.UsageError(f'--{name} is not a flag of this command')


def config(cls: type, named: Mapping[str, Optional[str]]) -> Any:
  """The typed config: ``--config`` (presets, overrides) then the named flags (``named``: flag -> path)."""
  check_flags(['config', *named])
  if CONFIG.value is None:
    raise app.UsageError('--config is required')
  try:
    cfg = schema.parse(cls, CONFIG.value)
    if not _STATE['default_config']:
      if FLAGS['preset'].present:
        raise app.UsageError('--preset only applies without --config (put presets after --config=FILE:)')
      for name in ('method', 'task'):
        if name in named and FLAGS[name].present and FLAGS[name].value != getattr(cfg, name).name:
          raise app.UsageError(
            f'--{name}={FLAGS[name].value} conflicts with the config ({name}='
            f'{getattr(cfg, name).name!r}); choose it with --config=...:{FLAGS[name].value}'
          )
    return schema.override(
      cfg, {path: FLAGS[name].value for name, path in named.items() if path and FLAGS[name].present}
    )
  except schema.ConfigError as e:
    raise app.UsageError(str(e)) from None


def given(*names: str) -> dict[str, Any]:
  """``{name: value}`` of the named flags that were given (the library's defaults apply to the others)."""
  return {name: FLAGS[name].value for name in names if FLAGS[name].present}


def check(argv: Sequence[str], accepted: Sequence[str], required: Sequence[str] = ()) -> None:
  """Usage errors for positional arguments, shared flags this command does not take, missing ``required``."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {list(argv[1:])}')
  check_flags(accepted)
  for name in required:
    if not FLAGS[name].value:
      raise app.UsageError(f'--{name} is required')


def run_config(
  argv: Sequence[str], fn: Callable[[Any], Any], cls: type, named: Mapping[str, Optional[str]]
) -> Any:
  """The ``main`` of a config-driven command: ``fn(config(cls, named))`` through :func:`call`."""
  check(argv, ['config', *named])
  return call(fn, config(cls, named))


def start(
  main: Callable[[list[str]], Any],
  cls: Optional[type],
  named: Mapping[str, Any],
  script: Optional[str] = None,
  presets: Sequence[str] = (),
) -> None:
  """``app.run(main)`` with the command's :func:`parser`; its shared flags show in its ``--helpshort``."""
  for name in (['config'] if cls is not None else []) + list(named):
    FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])

  def guarded(argv: list[str]) -> Any:
    try:
      return main(argv)
    except app.UsageError as e:  # absl would print the whole help text and exit 1
      _fail(str(e))

  app.run(guarded, flags_parser=parser(cls, named, script, presets))


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
  """Runs the library call of a command: library chatter filtered, config errors as usage errors."""
  logs.quiet_libraries()
  try:
    return fn(*args, **kwargs)
  except schema.ConfigError as e:
    raise app.UsageError(str(e)) from None
