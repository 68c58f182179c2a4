"""Checks on a saved plan (``sync --plan FILE``): the file is what gets applied, so it is what is checked.

Rules (each tested):
1. A saved plan whose content does not hash to the digest it carries was edited after it was made: refused.
2. A saved plan whose inputs (the directory read, the server state) changed since is stale: refused.
3. A saved plan whose actions differ from the plan the same inputs give *now* (re-planned at the saved
   plan's own time) was edited and re-hashed: refused. Rule 1 only catches careless edits; this one does not
   depend on the digest being secret.
4. The rails run on the saved actions, not on a fresh plan: the removal threshold (``check_removals``), the
   protected accounts (``exclude``, the provisioner, the bot, server admins) and "an untrusted read removes
   nobody" (:func:`rail_violations`); a power level lowered counts as a removal for all of them.
"""

from __future__ import annotations

from collections.abc import Mapping

from provisioner.core.actions import (
    REMOVALS,
    Action,
    DeactivateUser,
    Kick,
    LockUser,
    Plan,
    UnlockUser,
    UpdateRoom,
    UpdateUser,
)
from provisioner.core.reconcile import ObservedUser

PLAN_HINT = "nothing was applied. Make a new plan with `provisioner plan --out FILE`."


def saved_plan_problem(saved: Plan, fresh: Plan) -> str | None:
    """Why ``saved`` must not be applied, given ``fresh`` (re-planned at ``saved.created_at``), or None."""
    if saved.saved_digest is None:
        return f"the saved plan carries no content digest (edited, or made by an older version); {PLAN_HINT}"
    if saved.content_digest() != saved.saved_digest:
        return (
            "the saved plan was edited after it was made (its content no longer matches its digest); "
            + PLAN_HINT
        )
    if saved.fingerprint != fresh.fingerprint:
        return f"the saved plan is stale: the directory or the server changed since it was made; {PLAN_HINT}"
    if saved.actions != fresh.actions:
        first = next(
            (i for i, (a, b) in enumerate(zip(saved.actions, fresh.actions, strict=False)) if a != b),
            min(len(saved.actions), len(fresh.actions)),
        )
        return (
            f"the saved plan was edited: its {len(saved.actions)} actions differ from the "
            f"{len(fresh.actions)} the same directory and server give (first difference at action "
            f"{first + 1}); {PLAN_HINT}"
        )
    return None


def _target(action: Action) -> str | None:
    match action:
        case LockUser(user_id=u) | DeactivateUser(user_id=u) | Kick(user_id=u):
            return u
        case UnlockUser(user_id=u) | UpdateUser(user_id=u):
            return u
    return None


def rail_violations(
    actions: tuple[Action, ...],
    *,
    protected: frozenset[str],
    users: Mapping[str, ObservedUser],
    is_trusted: bool,
    why_untrusted: str | None,
) -> list[str]:
    """What in ``actions`` breaks a rail that ``reconcile`` keeps for the plans it makes itself."""
    out: list[str] = []
    removals = [a for a in actions if a.kind in REMOVALS]
    if removals and not is_trusted:
        out.append(f"{len(removals)} removals although the directory read is not trusted ({why_untrusted})")
    lowered = [(a.key, u) for a in actions if isinstance(a, UpdateRoom) for u, _ in a.lowered]
    if lowered and not is_trusted:
        out.append(f"{len(lowered)} power levels lowered although the directory read is not trusted")
    for key, who in lowered:
        if who in protected or ((seen := users.get(who)) is not None and seen.admin):
            out.append(f"lowering {who} in {key}, an account the provisioner never lowers")
    for a in actions:
        uid = _target(a)
        if uid is None:
            continue
        if uid in protected:
            out.append(f"{a.kind} of {uid}, an account the provisioner never touches (exclude or service)")
        elif a.kind in REMOVALS and (obs := users.get(uid)) is not None and obs.admin:
            out.append(f"{a.kind} of {uid}, a server admin")
    return out
