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

# MSC4133 custom profile fields with a person's directory details, one namespaced key per field so any
# client or bot can read (and a future client show) each on its own. ``department`` is the unit's path as
# people see it in space names, top level first, joined with " / " — never an internal unit key.
PROFILE_KEYS: Final = {
    "title": "org.civmatrix.title",
    "department": "org.civmatrix.department",
    "phone": "org.civmatrix.phone",
    "email": "org.civmatrix.email",
}
# The earlier single nested field (all four in one object). No longer written; kept so readers that still
# look for it can be found and moved to PROFILE_KEYS.
PROFILE_FIELD: Final = "org.civmatrix.directory"
