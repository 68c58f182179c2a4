"""Exit codes of the ``provisioner`` command; documented in README.md, stable for schedulers and alerting."""

OK = 0
UNEXPECTED = 1  # a bug: the traceback is logged
CONFIG = 2  # the config file or the command line is wrong; nothing was touched
DIRECTORY = 3  # the directory could not be read (unreachable, bind refused, base DN or filter wrong)
INCOMPLETE_READ = 4  # the directory read stopped early (size/time limit, connection lost)
HOMESERVER = 5  # the homeserver could not be reached or refused the provisioner's token
REMOVALS_HELD = 6  # the run would remove more people than safety allows; nothing was applied
STALE_PLAN = 7  # a saved plan no longer matches the directory or the server; nothing was applied
PARTIAL = 8  # the run applied, but some actions failed (see the report and the audit log)
LOCKED = 9  # another sync or watch holds the lock on this state directory; nothing was touched
DETECTION = 10  # `status` only: a running watch's change detection cannot work; it polls the roster instead
