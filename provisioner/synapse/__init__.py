"""What runs inside Synapse: the directory-login module, the admin-API refuser, and the renderer of the
closed-server ``homeserver.yaml``. ``deploy/`` and the embedded servers both point here, so production and
the tests load the same code."""
