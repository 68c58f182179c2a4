"""The watch's decisions (pure): when to sync, what changed, and the fast lock of leavers. Time is injected.

Rules (each tested):
1. A full sync runs first, then at least every ``full_interval`` seconds whatever the detector says: moves
   out of scope and changes on the server side only show in a full run, and a detector can be wrong.
2. A change seen by the detector is acted on once the directory has been quiet for ``debounce`` seconds,
   or ``max_delay`` seconds after the first unhandled change, whichever comes first: a burst (a
   reorganisation of 300 entries) becomes one run, and a steady trickle cannot postpone a run for ever.
3. A detector that cannot answer (``None``: no detection configured, or the directory unreachable) never
   triggers a run by itself; the interval still does.
4. Leavers (gone from the read, or newly disabled) are locked by the fast path with the rails of a sync:
   nobody is locked on an untrusted read (incomplete, or short of ``min_directory_fraction`` of the last good
   count: counted as held instead), never an excluded or service account, an admin, or someone already
   locked or deactivated; the threshold (``check_removals``) is checked on the fast plan by the caller.
5. Anything else that changed (hires, renames, moves, re-enabled people, units) needs the full pipeline.
6. Leavers are locked even while a full run is going (~8 s at 25,000 people): see :func:`keep_locked`.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from provisioner.core.actions import Action, LockUser, Plan, SaveRegistry, UnlockUser
from provisioner.core.model import DirectorySnapshot, Person
from provisioner.core.reconcile import ObservedUser, RegistryEntry, SyncPolicy


@dataclass(frozen=True, slots=True)
class WatchPolicy:
    poll_seconds: float = 1.0
    debounce_seconds: float = 1.0
    max_delay_seconds: float = 10.0
    full_interval_seconds: float = 3600.0
    tidy_after_seconds: float = 60.0


class Decision(enum.Enum):
    NONE = "none"  # nothing to do
    WAIT = "wait"  # a change is pending; the directory is not quiet yet (Rule 2)
    CHANGES = "changes"  # read the directory, lock leavers at once, sync the rest
    FULL = "full"  # the periodic full sync (Rule 1)


@dataclass(frozen=True, slots=True)
class WatchState:
    token: str | None = None  # the detector's last answer (contextCSN, highestCommittedUSN)
    last_full_at: float | None = None
    pending_since: float | None = None  # first change not yet handled
    last_change_at: float | None = None
    tidy_at: float | None = None  # a full sync is due then, to kick the leavers the fast path locked


def decide(
    state: WatchState, token: str | None, now: float, policy: WatchPolicy
) -> tuple[Decision, WatchState]:
    """What to do after one detector check that answered ``token`` at ``now``; and the state to keep."""
    if token is not None and state.token is not None and token != state.token:
        state = replace(state, pending_since=state.pending_since or now, last_change_at=now)
    if token is not None:
        state = replace(state, token=token)
    if state.last_full_at is None or now - state.last_full_at >= policy.full_interval_seconds:
        return Decision.FULL, state
    if state.pending_since is None or state.last_change_at is None:
        due = state.tidy_at is not None and now >= state.tidy_at
        return (Decision.FULL if due else Decision.NONE), state
    quiet = now - state.last_change_at >= policy.debounce_seconds
    overdue = now - state.pending_since >= policy.max_delay_seconds
    return (Decision.CHANGES if quiet or overdue else Decision.WAIT), state


def handled(state: WatchState, *, full: bool, now: float, tidy_at: float | None = None) -> WatchState:
    """The state after a run that read the directory at ``now`` (changes after it stay pending).

    ``tidy_at``: the fast path locked leavers; their kicks are due in a full sync then (a full run clears it).
    """
    pending = state.last_change_at is not None and state.last_change_at > now
    tidy = None if full else min(x for x in (tidy_at, state.tidy_at, float("inf")) if x is not None)
    return replace(
        state,
        tidy_at=None if tidy == float("inf") else tidy,
        last_full_at=now if full else state.last_full_at,
        pending_since=state.pending_since if pending else None,
        last_change_at=state.last_change_at if pending else None,
    )


@dataclass(frozen=True, slots=True)
class Delta:
    """What one directory read changed against the previous one, by anchor."""

    left: tuple[Person, ...]  # gone from the read: deleted, or moved out of the base DN / filter
    disabled: tuple[Person, ...]  # present, newly disabled
    other: int  # hires, renames, moves, re-enabled people and unit changes: the full pipeline's work

    @property
    def leaving(self) -> tuple[tuple[Person, str], ...]:
        return tuple((p, "left the directory") for p in self.left) + tuple(
            (p, "disabled in the directory") for p in self.disabled
        )


def directory_delta(before: DirectorySnapshot, after: DirectorySnapshot) -> Delta:
    old = {p.anchor: p for p in before.people}
    new = {p.anchor: p for p in after.people}
    left = tuple(old[a] for a in sorted(old.keys() - new.keys()))
    disabled = tuple(new[a] for a in sorted(new) if a in old and new[a].disabled and not old[a].disabled)
    # Being disabled is the fast path's; any other difference (or a hire) is the full pipeline's.
    other = sum(1 for a, p in new.items() if a not in old or replace(old[a], disabled=p.disabled) != p)
    other += sum(1 for a, p in new.items() if a in old and old[a].disabled and not p.disabled)
    if set(before.units) != set(after.units):
        other += 1
    return Delta(left, disabled, other)


def leaver_locks(
    leaving: tuple[tuple[Person, str], ...],
    registry: Mapping[str, RegistryEntry],
    users: Mapping[str, ObservedUser],
    policy: SyncPolicy,
    *,
    is_trusted: bool,
    now: float,
) -> Plan:
    """The fast plan for leavers (Rule 4): lock each and record when, nothing else.

    Kicks from rooms follow in the full sync: a locked account can no longer read them (every request with
    its tokens is refused with M_USER_LOCKED).
    """
    protected = policy.exclude | {policy.provisioner} | policy.service_accounts | {policy.bot or ""}
    locks: list[Action] = []
    entries: list[tuple[str, str, float | None, str | None]] = []
    held = 0
    for person, cause in leaving:
        entry = registry.get(person.anchor)
        if entry is None:
            continue  # never managed (a disabled person who never got an account)
        uid = f"@{entry.localpart}:{policy.server_name}"
        obs = users.get(uid)
        if uid in protected or obs is None or obs.deactivated or obs.admin or obs.locked:
            continue
        if not is_trusted:
            held += 1
            continue
        locks.append(LockUser(uid, cause))
        entries.append((person.anchor, entry.localpart, now, entry.profile))
    actions: tuple[Action, ...] = ((SaveRegistry(tuple(entries)),) if entries else ()) + tuple(locks)
    return Plan(actions=actions, fingerprint="", created_at=now, held_removals=held)


def keep_locked(plan: Plan, uids: Collection[str], server_name: str) -> Plan:
    """``plan`` without unlocking ``uids`` (Rule 6), nor rewriting their registry entries.

    Rule 6: a full run planned from a directory read made *before* a leaver left may find the account locked
    by the fast path meanwhile and plan to unlock it ("back in the directory"); those unlocks are dropped, and
    so is the run's stale registry entry for them (it would erase the lock date the fast path recorded).
    """
    if not uids:
        return plan
    actions: list[Action] = []
    for a in plan.actions:
        if isinstance(a, UnlockUser) and a.user_id in uids:
            continue
        if isinstance(a, SaveRegistry):
            kept = tuple(e for e in a.entries if f"@{e[1]}:{server_name}" not in uids)
            if not kept:
                continue
            a = SaveRegistry(kept, a.cause)
        actions.append(a)
    return replace(plan, actions=tuple(actions))
