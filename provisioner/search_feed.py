"""What each applied sync leaves for the directory search service (``search.index``).

Rules:
1. Only people a colleague can reach are listed: enabled in the directory, with an account that is neither
   deactivated nor locked once this run is done (a hire whose creation failed, a hand-set lock, excluded
   and service accounts never appear). A leaver is gone in the very run that locks them.
2. A read that cannot be trusted (stopped early, or far shorter than the last good one) removes nobody from
   the index either: people the read missed keep their previous entry.
3. The file is replaced atomically, so the service reads the old snapshot or the new one.
4. A person's avatar is their own (set in their client, never by the sync): the entry carries the one the
   account had when this run read it, so a new picture shows in search results after the next full run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from bridge.search.snapshot import IndexedPerson, SnapshotError, read_snapshot, write_snapshot
from provisioner.core.actions import CreateUser, LockUser, Plan, UnlockUser
from provisioner.core.desired import Desired
from provisioner.core.directory import units_by_key
from provisioner.core.model import DirectorySnapshot, Person
from provisioner.core.reconcile import Observed, SyncPolicy

log = logging.getLogger(__name__)


def _department(person: Person, paths: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    path = paths.get(person.unit_key)
    if path is not None:
        return path
    return tuple(x.strip() for x in (person.department or "").split(" / ") if x.strip())


def searchable(
    desired: Desired,
    observed: Observed,
    snapshot: DirectorySnapshot,
    plan: Plan,
    policy: SyncPolicy,
    *,
    failed_users: Iterable[str] = (),
) -> list[IndexedPerson]:
    """The people the search index lists after ``plan`` was applied (``failed_users``: did not go through)."""
    failed = set(failed_users)
    created = {a.user_id for a in plan.actions if isinstance(a, CreateUser)} - failed
    unlocked = {a.user_id for a in plan.actions if isinstance(a, UnlockUser)} - failed
    locked = {a.user_id for a in plan.actions if isinstance(a, LockUser)}
    hidden = set(policy.exclude) | set(policy.service_accounts) | {policy.provisioner}
    if policy.bot:
        hidden.add(policy.bot)
    paths = {key: unit.path for key, unit in units_by_key(snapshot.units).items()}
    out: list[IndexedPerson] = []
    for uid, p in desired.people.items():
        if p.disabled or uid in hidden or uid in locked:
            continue
        seen = observed.users.get(uid)
        if seen is None:
            if uid not in created:
                continue
        elif seen.deactivated or (seen.locked and uid not in unlocked):
            continue
        out.append(
            IndexedPerson(
                user_id=uid, display_name=p.display_name, login=p.login, sort_name=p.sort_name,
                title=p.title, department=_department(p, paths), email=p.email, phone=p.phone,
                avatar_url=seen.avatar_url if seen is not None else None,
            )
        )  # fmt: skip
    return out


def write_search_index(
    path: str,
    people: list[IndexedPerson],
    desired: Desired,
    *,
    trusted: bool,
    now: float,
) -> int:
    """Replace the snapshot at ``path``; with an untrusted read, people it missed keep their entry."""
    if not trusted:
        known = set(desired.people)
        try:
            _, before = read_snapshot(path)
        except SnapshotError:
            before = ()
        listed = {p.user_id for p in people}
        kept = [p for p in before if p.user_id not in known and p.user_id not in listed]
        if kept:
            log.warning("search index: keeping %d people the incomplete directory read missed", len(kept))
        people = people + kept
    n = write_snapshot(Path(path), people, generated_at=now)
    log.info("search index: %d people written to %s", n, path)
    return n
