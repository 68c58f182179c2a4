"""The pure core: directory entries → people and units → layout → desired state → a plan of typed actions.

:mod:`~provisioner.core.directory` interprets raw entries (with :mod:`~provisioner.core.dn` and
:mod:`~provisioner.core.identity`) into the :mod:`~provisioner.core.model`; :mod:`~provisioner.core.layout`
and :mod:`~provisioner.core.desired` turn people into spaces and rooms; :mod:`~provisioner.core.reconcile`
compares that with the observed server and returns a plan of :mod:`~provisioner.core.actions`. What they
decide with comes in as the frozen policies of :mod:`~provisioner.core.policy`, never as the config.

Nothing here does I/O or imports an I/O library, the config loader, YAML or the environment
(``tests/test_architecture.py`` enforces it); the shells in :mod:`provisioner` read the directory and the
homeserver, pass plain data in, and apply the plan that comes out.
"""
