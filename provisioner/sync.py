"""One sync run: read the directory, read the server, plan, check the safety rails, apply, record.

The I/O shell around the pure core (``desired``, ``reconcile``): it owns the clients and the clock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.matrix.client import HomeserverClient
from bridge.matrix.contract import CREATOR_POWER_VERSIONS, META_TYPE, PROFILE_KEYS
from bridge.matrix.errors import HomeserverError
from provisioner import exitcodes
from provisioner.apply import AuditLog, Executor, Progress, Report
from provisioner.config import Config
from provisioner.core.actions import Plan
from provisioner.core.desired import Desired, desired_state
from provisioner.core.directory import interpret
from provisioner.core.model import DirectorySnapshot
from provisioner.core.reconcile import (
    Observed,
    RemovalCheck,
    SyncPolicy,
    check_removals,
    fingerprint,
    previous_identities,
    previous_placements,
    reconcile,
    trusted,
)
from provisioner.core.saved import rail_violations, saved_plan_problem
from provisioner.core.scope import UnitScope, scope_plan, unit_scope
from provisioner.core.watch import keep_locked as keep_locked_plan
from provisioner.ldap_reader import read_directory
from provisioner.observe import RoomCache, observe, refresh_cache
from provisioner.search_feed import searchable, write_search_index

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass
class RunResult:
    plan: Plan
    snapshot: DirectorySnapshot
    observed: Observed
    desired: Desired
    removal_check: RemovalCheck
    scope: UnitScope | None = None  # the departments this run acted on; None: the whole directory
    report: Report | None = None
    exit_code: int = exitcodes.OK
    message: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def sync_policy(
    cfg: Config, provisioner: str, *, profile_fields: bool, room_version: str | None = None
) -> SyncPolicy:
    return SyncPolicy(
        server_name=cfg.homeserver.server_name,
        provisioner=provisioner,
        bot=cfg.bot_user_id,
        exclude=cfg.exclude,
        encrypted=cfg.layout.room_encryption,
        moderator_level=cfg.layout.moderator_power_level,
        profile_fields=profile_fields,
        deactivate_after_seconds=cfg.safety.deactivate_after_days * 86400.0,
        min_directory_fraction=cfg.safety.min_directory_fraction,
        creator_in_power_levels=(cfg.layout.room_version or room_version) not in CREATOR_POWER_VERSIONS,
        room_version=cfg.layout.room_version,
        public_spaces=cfg.layout.space_members == "tree",
    )


def room_cache(cfg: Config, *, now: float, full_read: bool) -> RoomCache:
    path = Path(cfg.sync.state_dir) / "rooms-cache.json"
    max_age = 0.0 if full_read else cfg.sync.full_read_hours * 3600.0
    return RoomCache.load(path, now=now, max_age=max_age)


async def make_plan(
    cfg: Config,
    client: HomeserverClient,
    snapshot: DirectorySnapshot,
    *,
    now: float,
    cache: RoomCache | None = None,
) -> tuple[Plan, Observed, Desired, SyncPolicy]:
    who = await client.whoami()
    caps = await client.capabilities()
    bot = cfg.bot_user_id
    observed = await observe(
        client,
        who.user_id,
        concurrency=cfg.sync.concurrency,
        cache=cache,
        service_accounts=[bot] if bot else [],
        # A full read (no warm room cache: first run, expired, or --full-read) also checks every profile.
        read_profiles=cache is None or not cache.entries,
    )
    policy = sync_policy(
        cfg,
        who.user_id,
        profile_fields=all(caps.can_set_profile_field(k) for k in PROFILE_KEYS.values()),
        room_version=caps.default_room_version,
    )
    previous, taken = previous_identities(snapshot, observed, cfg.homeserver.server_name)
    taken |= {u[1:].split(":", 1)[0] for u in (*cfg.exclude, who.user_id, policy.bot or "@:")} - {""}
    previous_rooms, previous_groups = previous_placements(observed)
    desired = desired_state(
        snapshot,
        cfg.layout_policy(),
        previous_localparts=previous,
        taken=taken,
        previous_rooms=previous_rooms,
        previous_groups=previous_groups,
    )
    plan = reconcile(desired, observed, snapshot, policy, now=now)
    return plan, observed, desired, policy


def _saved_rails(
    saved: Plan, snapshot: DirectorySnapshot, observed: Observed, policy: SyncPolicy
) -> str | None:
    is_trusted, why = trusted(snapshot, observed, policy)
    protected = policy.exclude | {policy.provisioner} | policy.service_accounts
    if policy.bot:
        protected |= {policy.bot}
    broken = rail_violations(
        saved.actions, protected=protected, users=observed.users, is_trusted=is_trusted, why_untrusted=why
    )
    if not broken:
        return None
    more = f" (and {len(broken) - 3} more)" if len(broken) > 3 else ""
    return "the saved plan breaks the safety rails: " + "; ".join(broken[:3]) + more + "; nothing was applied"


def managed_count(observed: Observed, snapshot: DirectorySnapshot) -> int:
    return max(len(observed.registry), len(snapshot.people))


def run_scope(cfg: Config, snapshot: DirectorySnapshot, units: Sequence[str]) -> UnitScope | None:
    """The departments a run acts on: ``units`` (``--unit``) within ``layout.onboarded_units``.

    Raises :class:`provisioner.core.scope.ScopeError` (exit 2) for a unit the directory does not have or
    cannot tell apart, before anything is written.
    """
    return unit_scope(
        units, cfg.layout.onboarded_units, snapshot.units, cfg.directory.base_dn, cfg.layout.org_name
    )


async def run(
    cfg: Config,
    *,
    apply: bool,
    saved_plan: Plan | None = None,
    allow_removals: int | None = None,
    clock: Clock = time.time,
    progress: bool = True,
    snapshot: DirectorySnapshot | None = None,
    full_read: bool = False,
    keep_locked: Collection[str] = (),
    units: Sequence[str] = (),
    progress_bar: Callable[[int], Progress] | None = None,
) -> RunResult:
    """Plan (and with ``apply`` carry out) one sync. Raises DirectoryError / HomeserverError to the CLI.

    ``keep_locked``: accounts the watch locked while this run was reading (read when planning is done, so a
    live set works): never unlocked by this run (``core.watch.keep_locked``).
    ``units``: act only on these departments (``core.scope``); ``layout.onboarded_units`` always applies.
    ``progress_bar``: makes the counter for a plan of that many actions, for a caller that shows the progress
    itself (the demo's one-line display) instead of ``progress``'s bar on stderr.
    """
    if snapshot is None:
        snapshot = interpret(await read_directory(cfg.directory), cfg.directory_policy())
    scope = run_scope(cfg, snapshot, units)
    token = cfg.homeserver.admin_token
    assert token is not None, "load the config with token_required=True"
    async with HomeserverClient(
        cfg.homeserver.url, token, pool_limit=max(8, cfg.sync.concurrency * 2)
    ) as client:
        before = client.stats
        now = clock()
        cache = room_cache(cfg, now=now, full_read=full_read)
        # A saved plan is re-planned at its own time, so that unchanged inputs give exactly its actions.
        plan_now = saved_plan.created_at if saved_plan is not None else now
        plan, observed, desired, policy = await make_plan(cfg, client, snapshot, now=plan_now, cache=cache)
        plan = keep_locked_plan(plan, keep_locked, cfg.homeserver.server_name)
        managed = managed_count(observed, snapshot)
        if scope is not None:
            protected = {*policy.exclude, policy.provisioner, *policy.service_accounts, policy.bot or ""}
            scoped = scope_plan(
                plan, scope, desired, observed, server_name=cfg.homeserver.server_name, protected=protected
            )
            plan, managed = scoped.plan, scoped.people
        result = RunResult(plan, snapshot, observed, desired, RemovalCheck(0, 0, True, None), scope)
        if saved_plan is not None:
            problem = saved_plan_problem(saved_plan, plan) or _saved_rails(
                saved_plan, snapshot, observed, policy
            )
            if problem:
                result.exit_code = exitcodes.STALE_PLAN
                result.message = problem
                return result
            # From here on the saved file is the plan: every rail below runs on the actions it holds.
            plan = saved_plan
            result.plan = plan
        check = check_removals(
            plan,
            managed,
            max_removals=cfg.safety.max_removals,
            max_percent=cfg.safety.max_removal_percent,
            allow=allow_removals,
        )
        result.removal_check = check
        if not check.allowed:
            result.exit_code = exitcodes.REMOVALS_HELD
            result.message = check.reason
            return result
        if not apply:
            cache.save()
            return result
        run_id = uuid.uuid4().hex[:12]
        audit = AuditLog(cfg.sync.audit_log, run_id)
        bar: Progress | None = None
        if progress_bar is not None:
            bar = progress_bar(len(plan.actions))
        elif plan.actions:
            bar = Progress(len(plan.actions), enabled=progress)
        executor = Executor(
            client,
            observed,
            server_name=cfg.homeserver.server_name,
            provisioner=policy.provisioner,
            concurrency=cfg.sync.concurrency,
            audit=audit,
            progress=bar,
        )
        try:
            report = await executor.run(plan)
        finally:
            audit.close()
            # Rooms this run wrote to (new ones included) must not be trusted from the cache: forget them
            # first, in case the re-read below cannot happen (a crash, the server gone).
            touched = {executor.room_ids[k] for k in touched_rooms(plan) if k in executor.room_ids}
            cache.forget(touched)
            cache.save()
        with contextlib.suppress(HomeserverError, OSError):
            await refresh_cache(client, policy.provisioner, cache, touched, concurrency=cfg.sync.concurrency)
            cache.save()
        result.report = report
        is_trusted, _ = trusted(snapshot, observed, policy)
        if cfg.search_index:
            # Written before anything else can fail, so a hire is findable the moment this run ends.
            people = searchable(desired, observed, snapshot, plan, policy, failed_users=report.failed_users)
            write_search_index(cfg.search_index, people, desired, trusted=is_trusted, now=clock())
        if is_trusted and report.ok and observed.last_good_count != len(snapshot.people):
            await client.put_account_data(
                policy.provisioner, META_TYPE, {"last_good_count": len(snapshot.people)}
            )
        if report.stopped:
            result.exit_code = exitcodes.HOMESERVER
            result.message = report.stopped
        elif not report.ok:
            result.exit_code = exitcodes.PARTIAL
            result.message = (
                f"{len(report.failed)} actions failed, {len(report.skipped)} skipped (see the audit log)"
            )
        spent = client.stats - before
        result.stats = {"reads": spent.reads, "writes": spent.writes, "retries": spent.retries,
                        "rooms_cached": cache.hits}  # fmt: skip
        write_last_run(cfg, result, run_id)
        return result


def touched_rooms(plan: Plan) -> set[str]:
    keys: set[str] = set()
    for a in plan.actions:
        for attr in ("key", "room_key", "parent_key", "child_key"):
            value = getattr(a, attr, None)
            if isinstance(value, str):
                keys.add(value)
    return keys


def write_last_run(cfg: Config, result: RunResult, run_id: str) -> None:
    os.makedirs(cfg.sync.state_dir, exist_ok=True)
    report = result.report
    data = {
        "run": run_id,
        "finished_at": time.time(),
        "exit_code": result.exit_code,
        "message": result.message,
        "directory": {
            "people": len(result.snapshot.people),
            "enabled": len(result.snapshot.enabled),
            "skipped": len(result.snapshot.skipped),
            "complete": result.snapshot.complete,
        },
        "planned": result.plan.counts(),
        "held_removals": result.plan.held_removals,
        "scope": result.scope.label if result.scope is not None else None,
        "done": dict(report.done) if report else {},
        "failed": report.failed[:100] if report else [],
        "seconds": report.seconds if report else 0.0,
        "requests": result.stats,
        "fingerprint": fingerprint(result.snapshot, result.observed),
    }
    path = os.path.join(cfg.sync.state_dir, "last_run.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False, indent=1)
    os.replace(tmp, path)
