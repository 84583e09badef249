"""The exit statuses of the command-line jobs, in one place (docs/architecture.md)."""

OK = 0
SOME_FAILED = 1  # some images failed (or are still pending); also absl's status for usage errors
USAGE = 1  # a bad flag / config value (absl's app.UsageError): one line, no traceback
CONFIG_MISMATCH = 2  # the output directory holds results of another configuration
PREEMPTED = 143  # 128 + SIGTERM: the state was saved; run the same command again to resume
