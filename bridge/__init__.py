"""Everything that speaks Matrix at runtime.

:mod:`bridge.matrix` is the one homeserver client (used by the provisioner too) and the names both sides
agree on; :mod:`bridge.events` is the event bot's domain, :mod:`bridge.bot` its runtime on matrix-nio, and
:mod:`bridge.cli` the ``bridge --config F run`` command.
"""
