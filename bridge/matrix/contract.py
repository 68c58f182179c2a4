"""The names the provisioner and the runtime agree on, as they appear on the homeserver.

Both sides read and write these; defining them once keeps a rename from silently splitting the two. The
module imports nothing, so the pure core may use it.
"""

from __future__ import annotations

from collections.abc import Mapping
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

# Room versions whose creators hold unlimited power outside power_levels (MSC4289): listing the creator in
# ``power_levels.users`` is refused there, and needed everywhere else.
CREATOR_POWER_VERSIONS: Final = frozenset({"12", "org.matrix.hydra.11"})

# A random value in the content of every room's create event the provisioner or the bot makes. From room
# version 12 the room ID is the hash of the create event, whose only other entropy is a millisecond
# timestamp: two createRoom calls with the same content in the same millisecond (the sync creates rooms in
# parallel) would collide on one room ID, which Synapse resolves only after failing to store the room.
CREATE_NONCE: Final = "org.civmatrix.nonce"

# The one power level that makes a moderator: the sync gives it to heads and group moderators, and the event
# bot lets people at or above it create events. ``layout.moderator_power_level`` is where it is set;
# ``bot.moderator_level`` is its older name, still read, and must agree when both are set.
DEFAULT_MODERATOR_LEVEL: Final = 50
MODERATOR_KEY: Final = "layout.moderator_power_level"
MODERATOR_ALIAS: Final = "bot.moderator_level"


class ModeratorLevelError(ValueError):
    """The moderator level is set wrong: ``key`` names the setting, ``message`` what to do."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(f"{key}: {message}")
        self.message, self.key = message, key


def moderator_level(raw: object) -> int:
    """The moderator level a whole config file (its loaded YAML) sets, read the same way by both sides."""
    sections = raw if isinstance(raw, Mapping) else {}
    found: dict[str, int] = {}
    for key in (MODERATOR_KEY, MODERATOR_ALIAS):
        section, name = key.split(".")
        part = sections.get(section)
        if not isinstance(part, Mapping) or part.get(name) is None:
            continue
        value = part[name]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 99:
            raise ModeratorLevelError(f"must be a whole number from 1 to 99, not {value!r}", key)
        found[key] = value
    if len(set(found.values())) > 1:
        raise ModeratorLevelError(
            f"is {found[MODERATOR_ALIAS]} but {MODERATOR_KEY} is {found[MODERATOR_KEY]}: the sync gives one "
            f"level and the bot checks it, so they must agree; drop {MODERATOR_ALIAS} (its older name)",
            MODERATOR_ALIAS,
        )
    return next(iter(found.values()), DEFAULT_MODERATOR_LEVEL)
