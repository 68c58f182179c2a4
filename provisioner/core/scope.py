"""A run scoped to some departments: which units, which rooms, which people, and the plan cut down to them.

Pure. A scoped run reads the whole directory and the whole server (unit names, aliases and IDs depend on all
of it), plans everything, and then keeps only the actions of the scope (:func:`scope_plan`):

Rule 1. The scope is the named units and every unit below them (``--unit``), intersected with
        ``layout.onboarded_units`` when that is set. A name is read as the event bot reads ``audience``
        (:mod:`provisioner.core.unitmatch`); a DN below the base DN or a unit key (``ou:<anchor>``) or a
        bare OU anchor is taken as it is.
Rule 2. The scope's rooms are the rooms and spaces of its units, and managed rooms hanging under its spaces
        on the server whose unit is gone from the directory (a sub-unit dissolved in a reorganisation).
        Every action on them is kept.
Rule 3. The scope's people are those whose unit is in the scope, and the managed members of its rooms on
        the server (someone who left or moved out is still the department's to remove). Only their
        accounts are created, updated, locked, unlocked or deactivated, and only their registry rows saved.
Rule 4. The spaces above the scope (its ancestors) are touched only for the scope's people: they are
        created when missing (power only for the scope's people) and linked to their parent, the scope's
        people join or leave them and are raised there; nobody else's membership, power, and no name,
        topic or join rule of an existing ancestor changes.
Rule 5. Everything else (other departments' rooms, other people) is left out: a scoped run never removes,
        locks or moves anyone outside the scope.
Rule 6. Onboarding only (no ``--unit``): a leaver or disabled person who has an account is locked, and later
        deactivated, whatever their unit, as in a full run: an account outside the onboarded units still
        must not outlive its owner's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import assert_never

from provisioner.core.actions import (
    Action,
    CreateRoom,
    CreateUser,
    DeactivateUser,
    ExemptRateLimit,
    Join,
    Kick,
    LinkChild,
    LockUser,
    Plan,
    SaveRegistry,
    UnlinkChild,
    UnlockUser,
    UpdateRoom,
    UpdateUser,
)
from provisioner.core.desired import Desired
from provisioner.core.directory import unit_path_of_dn
from provisioner.core.dn import DNError
from provisioner.core.model import ROOT_UNIT, Unit
from provisioner.core.reconcile import Observed
from provisioner.core.unitmatch import Ambiguous, Found, NotFound, fold, match_unit
from provisioner.core.unitmatch import Unit as NamedUnit


class ScopeError(ValueError):
    """A unit that cannot be told (unknown, or ambiguous); the message lists what to type instead."""


@dataclass(frozen=True, slots=True)
class UnitScope:
    units: frozenset[str]  # unit keys in scope, the subtrees below the named units included
    named: tuple[str, ...]  # the units named, as people see their paths (for messages and the plan's note)
    locks_everywhere: bool = False  # Rule 6: onboarding alone, no --unit

    @property
    def label(self) -> str:
        return "; ".join(self.named) or "no unit onboarded yet (layout.onboarded_units is empty)"


def _label(unit: Unit | NamedUnit, org_name: str) -> str:
    return " / ".join(unit.path) or org_name


def _candidates(units: Iterable[NamedUnit]) -> str:
    return "; ".join(f'"{u.label}"' for u in units)


def resolve_unit(query: str, units: Sequence[Unit], base_dn: str, *, source: str = "--unit") -> str:
    """The key of the unit ``query`` names (Rule 1); :class:`ScopeError` naming the candidates otherwise."""
    keys = {u.key for u in units}
    q = query.strip()
    if q in keys or f"ou:{q}" in keys:
        return q if q in keys else f"ou:{q}"
    if "=" in q:
        try:
            path = unit_path_of_dn(q, base_dn)
        except DNError as e:
            raise ScopeError(f'{source} "{query}": not a DN ({e})') from None
        if path is None:
            raise ScopeError(f'{source} "{query}": the DN is not below the base DN {base_dn}')
        folded = tuple(fold(p) for p in path)
        hit = [u.key for u in units if tuple(fold(p) for p in u.path) == folded]
        if not hit:
            raise ScopeError(f'{source} "{query}": no unit with people at that DN ({" / ".join(path)})')
        return hit[0]
    named = [NamedUnit(u.key, u.path) for u in units if u.path]
    match match_unit(q, named):
        case Found(unit=found):
            return found.key
        case Ambiguous(candidates=cands, more=more):
            extra = f" and {more} more" if more else ""
            raise ScopeError(
                f'{source} "{query}" fits several units: {_candidates(cands)}{extra}; type more of the path '
                '("Parent / Name") or the unit\'s DN'
            )
        case NotFound(suggestions=near):
            hint = f"; did you mean {_candidates(near)}?" if near else ""
            raise ScopeError(f'{source} "{query}": no such unit in the directory{hint}')
        case _ as unreachable:
            assert_never(unreachable)


def subtree(keys: Iterable[str], units: Sequence[Unit]) -> frozenset[str]:
    """``keys`` and every unit below them (top-level units hang under ``ROOT_UNIT``)."""
    parent = {u.key: u.parent_key for u in units}
    wanted = set(keys)
    out: set[str] = set()
    for key in {*parent, ROOT_UNIT}:
        k: str | None = key
        seen: set[str] = set()
        while k is not None and k not in seen:
            if k in wanted:
                out.add(key)
                break
            seen.add(k)
            k = parent.get(k)
    return frozenset(out)


def unit_scope(
    named: Sequence[str], onboarded: Sequence[str] | None, units: Sequence[Unit], base_dn: str, org_name: str
) -> UnitScope | None:
    """Rule 1: the scope of a run, or None for the whole directory."""
    if not named and onboarded is None:
        return None
    by_key = {u.key: u for u in units}
    keys = [resolve_unit(q, units, base_dn) for q in named]
    on_keys = [resolve_unit(q, units, base_dn, source="layout.onboarded_units") for q in onboarded or ()]
    scope = subtree(keys, units) if named else subtree(on_keys, units)
    if named and onboarded is not None:
        live = subtree(on_keys, units)
        outside = [by_key[k] for k in keys if not subtree([k], units) & live]
        if outside:
            raise ScopeError(
                f"--unit {'; '.join(_label(u, org_name) for u in outside)}: not onboarded yet, nothing in it "
                "is in layout.onboarded_units; add it there first"
            )
        scope &= live
    shown = keys if named else on_keys
    return UnitScope(scope, tuple(_label(by_key[k], org_name) for k in shown), locks_everywhere=not named)


# --- the plan cut down to the scope -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScopedPlan:
    plan: Plan
    people: int  # the scope's people (Rule 3): the removal threshold's percentage is a share of these


@dataclass(frozen=True, slots=True)
class _Cut:
    scope: UnitScope
    observed: Observed
    rooms: frozenset[str]  # Rule 2, by key
    room_ids: frozenset[str]  # the rooms of Rule 2 that exist on the server, by room ID
    ancestors: frozenset[str]  # Rule 4: keys of the spaces above the scope
    created: frozenset[str]  # ancestors this plan creates
    people: frozenset[str]  # Rule 3
    service: frozenset[str]  # the provisioner and the bot: they sit in every space people join


def _unit_of(key: str, kind: str) -> str:
    return key if kind == "space" else key.rpartition("#")[0]


def scope_rooms(scope: UnitScope, desired: Desired, observed: Observed) -> frozenset[str]:
    """Rule 2: keys of the scope's rooms and spaces, planned or found on the server."""
    layout = desired.layout
    keys = {sp.unit_key for sp in layout.spaces if sp.unit_key in scope.units}
    keys |= {r.key for r in layout.rooms if r.unit_key in scope.units}
    keys |= {k for k, r in observed.rooms.items() if _unit_of(k, r.kind) in scope.units}
    planned = {sp.unit_key for sp in layout.spaces} | {r.key for r in layout.rooms}
    by_id = {r.room_id: k for k, r in observed.rooms.items()}
    # A room of a unit still in the directory belongs to that unit's department wherever it hangs now.
    stack = [k for k in keys if k in observed.rooms]
    while stack:
        for child_id in sorted(observed.rooms[stack.pop()].children):
            child = by_id.get(child_id)
            if child is not None and child not in planned and child not in keys:
                keys.add(child)
                stack.append(child)
    return frozenset(keys)


def ancestors(scope: UnitScope, desired: Desired) -> frozenset[str]:
    """Rule 4: keys of the spaces above the scope, up to the organisation's."""
    parent = {sp.unit_key: sp.parent_key for sp in desired.layout.spaces}
    out: set[str] = set()
    for key in scope.units & parent.keys():
        p = parent.get(key)
        while p is not None and p not in out and p not in scope.units:
            out.add(p)
            p = parent.get(p)
    return frozenset(out)


def _cut(
    plan: Plan, scope: UnitScope, desired: Desired, observed: Observed, protected: frozenset[str]
) -> _Cut:
    rooms = scope_rooms(scope, desired, observed)
    above = ancestors(scope, desired)
    people = {uid for uid, p in desired.people.items() if p.unit_key in scope.units}
    for key in rooms:
        found = observed.rooms.get(key)
        if found is not None and found.kind == "room":
            people |= found.members
    return _Cut(
        scope=scope,
        observed=observed,
        rooms=rooms,
        room_ids=frozenset(observed.rooms[k].room_id for k in rooms if k in observed.rooms),
        ancestors=above,
        created=frozenset(a.key for a in plan.actions if isinstance(a, CreateRoom) and a.key in above),
        people=frozenset(people - protected),
        service=protected,
    )


def _ancestor_power(c: _Cut, a: UpdateRoom) -> Action | None:
    """Rule 4 on an existing space above the scope: only the scope's people are raised, nothing else moves."""
    if a.power_users is None:
        return None
    seen = c.observed.rooms[a.key].power_users
    raised = {u: lvl for u, lvl in a.power_users if u in c.people and seen.get(u, 0) < lvl}
    if not raised:
        return None
    return UpdateRoom(a.key, power_users=tuple(sorted({**seen, **raised}.items())), cause=a.cause)


def _room_action(c: _Cut, a: Action) -> Action | None:
    """Rules 2, 4 and 5 for the actions on rooms and spaces."""
    match a:
        case CreateRoom() if a.key in c.rooms:
            return a
        case CreateRoom() if a.key in c.created:
            # The provisioner, then the scope's people: the others are not joined (layout rule 6).
            power = tuple((u, lvl) for u, lvl in a.power_users if u in c.people or lvl >= 100)
            return replace(a, power_users=power)
        case UpdateRoom() if a.key in c.rooms or a.key in c.created:
            return a
        case UpdateRoom() if a.key in c.ancestors and a.key in c.observed.rooms:
            return _ancestor_power(c, a)
        case LinkChild() if a.child_key in c.rooms or a.child_key in c.created:
            return a
        case UnlinkChild() if a.parent_key in c.rooms or a.child_room_id in c.room_ids:
            return a
        case Join() | Kick() if a.room_key in c.rooms:
            return a
        case Join() if a.room_key in c.ancestors and a.user_id in c.people | c.service:
            return a
        case Kick() if a.room_key in c.ancestors and a.user_id in c.people:
            return a
        case _:
            return None


def _keep(c: _Cut, a: Action) -> Action | None:
    match a:
        case CreateUser() | UpdateUser() | UnlockUser():
            return a if a.user_id in c.people else None
        case LockUser() | DeactivateUser():
            return a if a.user_id in c.people or c.scope.locks_everywhere else None
        case ExemptRateLimit() | SaveRegistry():
            return a  # the registry rows are cut once the kept actions are known (_registry)
        case CreateRoom() | UpdateRoom() | LinkChild() | UnlinkChild() | Join() | Kick():
            return _room_action(c, a)
        case _ as unreachable:
            assert_never(unreachable)


def _registry(actions: list[Action], c: _Cut, server_name: str) -> list[Action]:
    """Registry rows of the scope's people, and of anyone whose lock this plan keeps (Rule 6)."""
    locked = {a.user_id for a in actions if isinstance(a, LockUser | DeactivateUser)}
    out: list[Action] = []
    for a in actions:
        if isinstance(a, SaveRegistry):
            rows = tuple(r for r in a.entries if f"@{r[1]}:{server_name}" in c.people | locked)
            if not rows:
                continue
            a = SaveRegistry(rows, a.cause)
        out.append(a)
    return out


def scope_plan(
    plan: Plan,
    scope: UnitScope,
    desired: Desired,
    observed: Observed,
    *,
    server_name: str,
    protected: Iterable[str] = (),
) -> ScopedPlan:
    """``plan`` cut down to ``scope`` (Rules 2-6), in the plan's own order.

    ``held_removals`` stays the whole read's: an untrusted read holds removals everywhere, the scope's too.
    """
    c = _cut(plan, scope, desired, observed, frozenset(protected))
    kept = [k for a in plan.actions if (k := _keep(c, a)) is not None]
    actions = tuple(_registry(kept, c, server_name))
    note = f"scope: {scope.label} ({len(scope.units)} units, {len(c.people)} people)"
    return ScopedPlan(replace(plan, actions=actions, notes=(*plan.notes, note)), len(c.people))
