"""The pure core: directory entries → people and units → layout → desired state → a plan of typed actions.

Nothing here does I/O or imports an I/O library, the config loader, YAML or the environment
(``tests/test_architecture.py`` enforces it); the shells in :mod:`provisioner` read the directory and the
homeserver, pass plain data in, and apply the plan that comes out.
"""
