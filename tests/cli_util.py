"""In-process absl CLI runner shared by the CLI tests (no torch needed)."""

from absl import flags


def run_cli_in_process(main, argv):
  """Runs an absl ``main`` with ``--name=value`` / ``--flag`` / ``--noflag`` args, as ``python -m``.

  Flags are set one by one and marked parsed, so validators of other launch modules imported in the same
  pytest process (their required flags) do not interfere.
  """
  fv = flags.FLAGS
  fv.unparse_flags()
  try:
    for arg in argv:
      name, has_value, value = arg[2:].partition('=')
      if not has_value:
        name, value = (name[2:], 'false') if name.startswith('no') and name not in fv else (name, 'true')
      fv[name].parse(value)
      fv[name].using_default_value = False
    fv.mark_as_parsed()
    main(['prog'])
  finally:
    fv.unparse_flags()
