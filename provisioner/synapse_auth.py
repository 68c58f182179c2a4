"""Old import path of the directory-login module.

Kept because homeserver.yaml files generated before the move name
``provisioner.synapse_auth.DirectoryAuthProvider``; new configs use :mod:`provisioner.synapse.auth`.
"""

from provisioner.synapse.auth import DirectoryAuthProvider

__all__ = ["DirectoryAuthProvider"]
