"""The exit statuses of the command-line jobs, in one place (docs/architecture.md, docs/batch_inversion.md).

Every class of outcome has its own status, so a scheduler can tell "rerun me" from "fix the command":

| status | meaning |
|---|---|
| 0 | done: every image ok (``launch.evaluate``: at least one pair evaluated) |
| 1 | some images failed or are pending (``launch.evaluate``: no pair could be evaluated) |
| 2 | usage, config or path error: one line on stderr naming the flag / key / file, nothing written |
| 75 | the output folder is locked by another running job (EX_TEMPFAIL): nothing touched; retry later |
| 143 | preempted (SIGTERM, 128 + 15): the state was saved; run the same command again to resume |
"""

OK = 0
SOME_FAILED = 1  # some images failed (or are still pending); launch.evaluate: nothing evaluated
USAGE = 2  # a bad flag / config value / path (absl's app.UsageError too): one line, no traceback
CONFIG_MISMATCH = USAGE  # the output directory holds results of another configuration (a config error)
LOCKED = 75  # EX_TEMPFAIL (sysexits.h): another job holds the output folder's lock
PREEMPTED = 143  # 128 + SIGTERM: the state was saved; run the same command again to resume
