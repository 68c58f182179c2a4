"""Process managers only: real servers started on loopback with their own config and data directories, for
the demo and the tests. What those servers run (the Synapse config, the login module) is not here but in
:mod:`provisioner.synapse`, shared with production."""
