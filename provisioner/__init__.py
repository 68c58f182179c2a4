"""Directory → Matrix sync: read LDAP/AD, plan users, spaces and size-capped rooms, apply them to Synapse.

:mod:`provisioner.core` is the pure core (entries → people and units → layout → plan of typed actions);
the modules here are the shells around it: the config parsed once, the LDAP reader, the observer, the
executor, one sync run, the CLI, the demo and the deploy-config renderer. :mod:`provisioner.synapse` is
what runs inside Synapse (the login module, the admin-API refuser, the ``homeserver.yaml`` renderer);
:mod:`provisioner.embedded` starts real servers for the demo and the tests.
"""
