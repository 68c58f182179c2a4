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
META_TYPE: Final = "org.civmatrix.meta"

# MSC4133 custom profile field holding a person's directory details as one object (title, department,
# phone, email): one request per person instead of four, which at 25,000 people saves 75,000 requests on
# the first sync.
PROFILE_FIELD: Final = "org.civmatrix.directory"

# A random value in the content of every room's create event the provisioner or the bot makes. From room
# version 12 the room ID is the hash of the create event, whose only other entropy is a millisecond
# timestamp: two createRoom calls with the same content in the same millisecond (the sync creates rooms in
# parallel) would collide on one room ID, which Synapse resolves only after failing to store the room.
CREATE_NONCE: Final = "org.civmatrix.nonce"
