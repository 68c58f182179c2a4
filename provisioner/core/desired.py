"""From a directory snapshot to the desired server state: IDs, profiles and layout. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from provisioner.core.identity import assign_localparts
from provisioner.core.layout import Layout, plan_layout
from provisioner.core.model import DirectorySnapshot, Person
from provisioner.core.policy import LayoutPolicy


@dataclass(frozen=True, slots=True)
class Desired:
    localparts: Mapping[str, str]  # anchor → localpart, for every person read (disabled ones too)
    people: Mapping[str, Person]  # user ID → person
    layout: Layout


def desired_state(
    snapshot: DirectorySnapshot,
    policy: LayoutPolicy,
    *,
    previous_localparts: Mapping[str, str] | None = None,
    taken: Iterable[str] = (),
    previous_rooms: Mapping[str, str] | None = None,
    previous_groups: Mapping[str, Mapping[str, int]] | None = None,
) -> Desired:
    """IDs for everyone read, and the layout of the enabled people.

    ``policy`` must reserve the same seats as the sync (:meth:`provisioner.config.Config.layout_policy`
    does), or the ``layout`` preview shows other rooms than the sync makes.
    """
    localparts = assign_localparts(
        ((p.anchor, p.login) for p in snapshot.people), previous=previous_localparts, taken=taken
    )
    server = policy.server_name
    people = {f"@{localparts[p.anchor]}:{server}": p for p in snapshot.people}
    layout = plan_layout(
        snapshot.enabled, snapshot.units, localparts, policy, previous_rooms, snapshot.groups, previous_groups
    )
    return Desired(localparts=localparts, people=people, layout=layout)
