"""From a directory snapshot to the desired server state: IDs, profiles and layout. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from provisioner.config import Config
from provisioner.core.identity import assign_localparts
from provisioner.core.layout import Layout, LayoutPolicy, plan_layout
from provisioner.core.model import DirectorySnapshot, Person


@dataclass(frozen=True, slots=True)
class Desired:
    localparts: Mapping[str, str]  # anchor → localpart, for every person read (disabled ones too)
    people: Mapping[str, Person]  # user ID → person
    layout: Layout


def service_seats(cfg: Config) -> int:
    """Seats every room keeps for service accounts: the provisioner, and the event bot if one is set."""
    bot = cfg.raw.get("bot")
    return 2 if isinstance(bot, dict) and isinstance(bot.get("user_id"), str) else 1


def layout_policy(cfg: Config, *, reserved_seats: int = 1) -> LayoutPolicy:
    return LayoutPolicy(
        server_name=cfg.homeserver.server_name,
        max_room_size=cfg.layout.max_room_size,
        org_name=cfg.layout.org_name,
        alias_prefix=cfg.layout.alias_prefix,
        head_title_pattern=cfg.layout.head_title_pattern,
        reserved_seats=reserved_seats,
        space_members=cfg.layout.space_members,
    )


def desired_state(
    snapshot: DirectorySnapshot,
    cfg: Config,
    *,
    previous_localparts: Mapping[str, str] | None = None,
    taken: Iterable[str] = (),
    previous_rooms: Mapping[str, str] | None = None,
) -> Desired:
    """IDs for everyone read, and the layout of the enabled people."""
    localparts = assign_localparts(
        ((p.anchor, p.login) for p in snapshot.people), previous=previous_localparts, taken=taken
    )
    server = cfg.homeserver.server_name
    people = {f"@{localparts[p.anchor]}:{server}": p for p in snapshot.people}
    layout = plan_layout(
        snapshot.enabled,
        snapshot.units,
        localparts,
        # The same seats in the `layout` preview as in the sync, or the preview shows other rooms.
        layout_policy(cfg, reserved_seats=service_seats(cfg)),
        previous_rooms,
    )
    return Desired(localparts=localparts, people=people, layout=layout)
