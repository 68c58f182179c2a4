"""The watch's decisions (pure): when to sync, what changed, and the fast lock of leavers. Time is injected.

Rules (each tested):
1. A full sync runs first, then at least every ``full_interval`` seconds whatever the detector says: moves
   out of scope and changes on the server side only show in a full run, and a detector can be wrong.
2. A change seen by the detector is acted on once the directory has been quiet for ``debounce`` seconds,
   or ``max_delay`` seconds after the first unhandled change, whichever comes first: a burst (a
   reorganisation of 300 entries) becomes one run, and a steady trickle cannot postpone a run for ever.
3. A detector that cannot answer (``None``: no detection configured, or the directory unreachable) never
   triggers a run by itself; the interval still does.
4. Leavers (gone from the roster — the in-scope anchors — or newly disabled) are locked by the fast path with
   the rails of a sync: nobody is locked on an untrusted roster (incomplete, or short of
   ``min_directory_fraction`` of the last good count: counted as held instead), never an excluded or service
   account, an admin, or someone already locked or deactivated; the threshold (``check_removals``) is
   checked on the fast plan by the caller.
5. Every change also gets a full run (hires, renames, moves, and the leavers' kicks): a roster of anchors
   cannot tell a rename from nothing. Changes seen while one runs queue one more run, not one each.
6. Leavers are locked even while a full run is going (~8 s at 25,000 people): see :func:`keep_locked`.
7. A detector that *cannot work* (no contextCSN: the syncprov overlay is missing; no highestCommittedUSN; the
   attribute not readable) is not silent: the watch says so once, again every ``full_interval`` seconds while
   it lasts, and falls back to reading the roster every ``fallback_seconds`` and comparing it with the last
   one (Rule 4's leavers; any other difference in it queues a full run). The detector is still asked at
   every poll, and the first token it gives ends the fallback (said too) after one last read. An unreachable
   directory changes neither: it says nothing about whether detection works.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from provisioner.core.actions import Action, LockUser, Plan, SaveRegistry, UnlockUser
from provisioner.core.model import DirectorySnapshot
from provisioner.core.reconcile import ObservedUser, RegistryEntry, SyncPolicy


@dataclass(frozen=True, slots=True)
class WatchPolicy:
    poll_seconds: float = 1.0
    debounce_seconds: float = 1.0
    max_delay_seconds: float = 10.0
    full_interval_seconds: float = 3600.0
    fallback_seconds: float = 10.0


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


def decide(
    state: WatchState, token: str | None, now: float, policy: WatchPolicy, *, full_running: bool = False
) -> tuple[Decision, WatchState]:
    """What to do after one detector check that answered ``token`` at ``now``; and the state to keep.

    ``full_running``: a full run is in progress, so a due full run waits and changes are decided on (their
    leavers must not wait for it, Rule 6).
    """
    if token is not None and state.token is not None and token != state.token:
        state = replace(state, pending_since=state.pending_since or now, last_change_at=now)
    if token is not None:
        state = replace(state, token=token)
    full_due = state.last_full_at is None or now - state.last_full_at >= policy.full_interval_seconds
    if full_due and not full_running:
        return Decision.FULL, state
    if state.pending_since is None or state.last_change_at is None:
        return Decision.NONE, state
    quiet = now - state.last_change_at >= policy.debounce_seconds
    overdue = now - state.pending_since >= policy.max_delay_seconds
    return (Decision.CHANGES if quiet or overdue else Decision.WAIT), state


def handled(state: WatchState, *, full: bool, now: float) -> WatchState:
    """The state after a run that read the directory at ``now`` (changes after it stay pending)."""
    pending = state.last_change_at is not None and state.last_change_at > now
    return replace(
        state,
        last_full_at=now if full else state.last_full_at,
        pending_since=state.pending_since if pending else None,
        last_change_at=state.last_change_at if pending else None,
    )


class Notice(enum.Enum):
    """What a detector check changed about detection itself (Rule 7): what to tell the operator."""

    NONE = "none"
    BROKEN = "broken"  # detection just stopped working (or never did): the fallback starts
    REMIND = "remind"  # still broken, one full interval after the last word about it
    RECOVERED = "recovered"  # a token again: the fallback ends


@dataclass(frozen=True, slots=True)
class Detection:
    broken: str | None = None  # why the detector cannot work; None while it works or has not said
    since: float | None = None
    told_at: float | None = None
    read_at: float | None = None  # the fallback's last roster read


def detection(
    d: Detection, *, token: str | None, broken: str | None, now: float, policy: WatchPolicy
) -> tuple[Detection, Notice, bool]:
    """Rule 7 after one check that gave ``token``, or ``broken`` (why it cannot work), or neither (no answer).

    Returns the state to keep, what to tell, and whether the fallback's roster read is due now (the caller
    reads it at once, so it is counted as done).
    """
    notice = Notice.NONE
    if token is not None and d.broken is not None:
        # One last read: whoever left between the fallback's last read and this first token is the
        # detector's no longer (its changes count from this token on).
        return Detection(), Notice.RECOVERED, True
    if broken is not None:
        if d.broken is None:
            d, notice = Detection(broken, now, now, d.read_at), Notice.BROKEN
        elif d.told_at is not None and now - d.told_at >= policy.full_interval_seconds:
            d, notice = replace(d, broken=broken, told_at=now), Notice.REMIND
        else:
            d = replace(d, broken=broken)
    due = d.broken is not None and (d.read_at is None or now - d.read_at >= policy.fallback_seconds)
    if due:
        d = replace(d, read_at=now)
    return d, notice, due


def roster_changed(before: Roster, after: Roster) -> bool:
    """A complete roster that differs from ``before``: somebody came, went, or was disabled or enabled."""
    return after.complete and (before.present != after.present or before.disabled != after.disabled)


@dataclass(frozen=True, slots=True)
class Roster:
    """Who is in scope, by anchor: the cheapest read that still sees every leaver.

    Two searches asking for the anchor attribute only (0.4 s at 25,000 people, against ~3 s for the whole
    read and its interpretation): the people the filter matches under the base DN, and those of them that
    are disabled.
    """

    present: frozenset[str]
    disabled: frozenset[str]
    complete: bool
    stop_reason: str | None = None

    @property
    def enabled(self) -> frozenset[str]:
        return self.present - self.disabled

    @classmethod
    def of(cls, snapshot: DirectorySnapshot) -> Roster:
        return cls(
            frozenset(p.anchor for p in snapshot.people),
            frozenset(p.anchor for p in snapshot.people if p.disabled),
            snapshot.complete,
            snapshot.stop_reason,
        )


def leavers(before: Roster, after: Roster) -> tuple[tuple[str, str], ...]:
    """(anchor, cause) of everyone enabled in ``before`` who is gone from ``after`` or disabled in it."""
    gone = sorted(before.enabled - after.present)
    off = sorted(before.enabled & after.disabled)
    return tuple((a, "left the directory") for a in gone) + tuple(
        (a, "disabled in the directory") for a in off
    )


def roster_trusted(roster: Roster, last_good: int | None, min_fraction: float) -> tuple[bool, str | None]:
    """Rule 4's trust, as ``reconcile.trusted`` judges a full read."""
    if not roster.complete:
        return False, f"the directory read was incomplete ({roster.stop_reason})"
    if last_good and len(roster.present) < min_fraction * last_good:
        return False, (
            f"the directory returned {len(roster.present)} people, fewer than {min_fraction:.0%} of the last "
            f"good read ({last_good})"
        )
    return True, None


def leaver_locks(
    leaving: tuple[tuple[str, str], ...],
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
    for anchor, cause in leaving:
        entry = registry.get(anchor)
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
        entries.append((anchor, entry.localpart, now, entry.profile))
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
