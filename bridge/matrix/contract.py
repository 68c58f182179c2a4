"""The names the provisioner and the runtime agree on, as they appear on the homeserver.

Both sides read and write these; defining them once keeps a rename from silently splitting the two. The
module imports nothing, so the pure core may use it.
"""

from __future__ import annotations

from typing import Final

# State event the provisioner puts in every room and space it manages (content: unit key, kind, shard).
# Rooms without it are never touched by the sync, and the bot uses it to find a unit's rooms.
MARKER_TYPE: Final = "org.civmatrix.managed"
# The provisioner's account data: the anchor → localpart registry (sharded) and the last run's summary.
REGISTRY_TYPE: Final = "org.civmatrix.registry"
# The auth provider of the external id (provider, anchor) the provisioner writes on every account; the
# login module inside Synapse finds a person's account by it, so a renamed login keeps its account.
EXTERNAL_ID_PROVIDER: Final = "civmatrix"
META_TYPE: Final = "org.civmatrix.meta"

# MSC4133 custom profile field holding a person's directory details as one object (title, department,
# phone, email): one request per person instead of four, which at 25,000 people saves 75,000 requests on
# the first sync.
PROFILE_FIELD: Final = "org.civmatrix.directory"
