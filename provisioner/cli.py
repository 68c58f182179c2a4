"""The ``provisioner`` command. Thin: parse arguments, call the modules, print, map errors to exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections import Counter
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import Any, NoReturn

import click

from bridge.matrix.client import HomeserverClient
from bridge.matrix.errors import HomeserverError
from provisioner import exitcodes, runlock, sync
from provisioner.config import Config, ConfigError, effective_settings, load_config
from provisioner.core.actions import Plan, action_from_dict, describe
from provisioner.core.desired import Desired, desired_state
from provisioner.core.directory import interpret
from provisioner.core.groups import GroupError
from provisioner.core.layout import Layout
from provisioner.core.model import ROOT_UNIT, DirectorySnapshot, Unit
from provisioner.core.reconcile import Observed, RemovalCheck
from provisioner.core.scope import ScopeError, UnitScope, ancestors, unit_scope
from provisioner.ldap_reader import DirectoryError, read_directory
from provisioner.observe import observe

log = logging.getLogger("provisioner")


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


class Context:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    def config(self, *, token_required: bool = False) -> Config:
        if self._config is None:
            if not self.config_path:
                fail("--config FILE is required for this command", exitcodes.CONFIG)
            try:
                self._config = load_config(self.config_path, token_required=token_required)
            except ConfigError as e:
                fail(str(e), exitcodes.CONFIG)
        return self._config


def read_snapshot(cfg: Config) -> DirectorySnapshot:
    try:
        result = asyncio.run(read_directory(cfg.directory))
        return interpret(result, cfg.directory_policy(), skip_log=False)
    except GroupError as e:  # a group the config names that the directory does not hold: fix the config
        fail(f"{cfg.path}: {e}", exitcodes.CONFIG)
    except DirectoryError as e:
        fail(str(e), exitcodes.DIRECTORY)


UNIT_HELP = (
    "Only this department and the units below it: its path as people see it (any case, ё = е, a unique "
    "start is enough), its DN or its unit key. Repeatable."
)


def unit_option(fn: Any) -> Any:
    return click.option("--unit", "units", multiple=True, metavar="PATH", help=UNIT_HELP)(fn)


def scope_of(
    cfg: Config, snap: DirectorySnapshot, units: tuple[str, ...], *, onboarding: bool
) -> UnitScope | None:
    """``--unit``, within ``layout.onboarded_units`` when ``onboarding``; a unit not told apart: exit 2."""
    try:
        if onboarding:
            return sync.run_scope(cfg, snap, units)
        return unit_scope(units, None, snap.units, cfg.directory.base_dn, cfg.layout.org_name)
    except ScopeError as e:
        fail(f"{e}; nothing was done", exitcodes.CONFIG)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="FILE", help="The YAML config (see config/example.yaml).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Sync the LDAP / Active Directory directory into a closed Matrix server."""
    _setup_logging(verbose)
    ctx.obj = Context(config_path)


def _summary(snapshot: DirectorySnapshot) -> dict[str, Any]:
    reasons = Counter(s.reason.split(":")[0].split(" (")[0] for s in snapshot.skipped)
    return {
        "entries_read": snapshot.entries_read,
        "people": len(snapshot.people),
        "enabled": len(snapshot.enabled),
        "disabled": len(snapshot.disabled),
        "units": len(snapshot.units),
        "skipped": len(snapshot.skipped),
        "set_aside": len(snapshot.set_aside),
        "skipped_by_reason": dict(reasons),
        "complete": snapshot.complete,
        "stop_reason": snapshot.stop_reason,
    }


def _in_scope(snap: DirectorySnapshot, scope: UnitScope | None) -> DirectorySnapshot:
    """The people and units of ``scope`` (entries skipped or set aside have no unit: they stay listed)."""
    if scope is None:
        return snap
    return replace(
        snap,
        people=tuple(p for p in snap.people if p.unit_key in scope.units),
        units=tuple(u for u in snap.units if u.key in scope.units),
    )


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@unit_option
@click.pass_obj
def directory(obj: Context, as_json: bool, units: tuple[str, ...]) -> None:
    """Read the directory and print what was found (no homeserver needed)."""
    cfg = obj.config()
    d = cfg.directory
    settings = effective_settings(d)
    onboarded = cfg.layout.onboarded_units
    if not as_json:
        # Before the read: when the read fails, what it was asked is what the operator needs to see.
        click.echo(f"directory {d.uri}, base {d.base_dn}, preset {d.preset}")
        for name, value, origin in settings:
            click.echo(f"  {name:<16} : {value if value is not None else '(none)'}  [{origin}]")
        for name, dns in (("exclude", d.exclude), ("leavers", d.leavers)):
            click.echo(f"  {name:<16} : {'; '.join(dns) if dns else '(none)'}")
        live = (
            "all (layout.onboarded_units unset)" if onboarded is None else "; ".join(onboarded) or "none yet"
        )
        click.echo(f"  {'onboarded':<16} : {live}")
    whole = read_snapshot(cfg)
    scope = scope_of(cfg, whole, units, onboarding=False)
    snap = _in_scope(whole, scope)
    summary = _summary(snap)
    if as_json:
        summary["settings"] = {name: {"value": value, "from": origin} for name, value, origin in settings}
        summary["exclude"], summary["leavers"] = list(d.exclude), list(d.leavers)
        summary["onboarded_units"] = list(onboarded) if onboarded is not None else None
        summary["scope"] = list(scope.named) if scope is not None else None
        summary["skipped_entries"] = [asdict(s) for s in snap.skipped]
        summary["set_aside_entries"] = [asdict(a) for a in snap.set_aside]
        click.echo(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        if scope is not None:
            click.echo(
                f"  scope        : {scope.label} ({len(scope.units)} units; entries read: the whole base)"
            )
        click.echo(f"  entries read : {snap.entries_read}")
        enabled, disabled = len(snap.enabled), len(snap.disabled)
        click.echo(f"  people       : {len(snap.people)} ({enabled} enabled, {disabled} disabled)")
        click.echo(f"  units        : {len(snap.units)}")
        click.echo(f"  set aside    : {len(snap.set_aside)} (directory.exclude / directory.leavers: leavers)")
        click.echo(f"  skipped      : {len(snap.skipped)}")
        for s in snap.skipped[:50]:
            click.echo(f"    - {s.dn}: {s.reason}")
        if len(snap.skipped) > 50:
            click.echo(f"    … and {len(snap.skipped) - 50} more (use --json for all)")
        state = "complete" if snap.complete else f"INCOMPLETE: {snap.stop_reason}"
        click.echo(f"  read         : {state}")
    if not snap.complete:
        sys.exit(exitcodes.INCOMPLETE_READ)


def _layout_json(desired: Desired) -> dict[str, Any]:
    return {
        "spaces": [
            {"unit": s.unit_key, "name": s.name, "alias": s.alias, "parent": s.parent_key,
             "members": len(s.members), "moderators": list(s.moderators), "children": list(s.children)}
            for s in desired.layout.spaces
        ],
        "rooms": [
            {"key": r.key, "name": r.name, "alias": r.alias, "unit": r.unit_key, "shard": r.shard,
             "shards": r.shard_count, "size": len(r.members), "members": list(r.members),
             "moderators": list(r.moderators)}
            for r in desired.layout.rooms
        ],
    }  # fmt: skip


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output, with every member.")
@unit_option
@click.pass_obj
def layout(obj: Context, as_json: bool, units: tuple[str, ...]) -> None:
    """Plan the spaces and rooms from the directory (no homeserver needed)."""
    cfg = obj.config()
    snap = read_snapshot(cfg)
    scope = scope_of(cfg, snap, units, onboarding=True)
    desired = desired_state(snap, cfg.layout_policy(), taken=_excluded_localparts(cfg))
    if scope is not None:
        # Planned whole (names and aliases depend on every unit), shown for the scope and the spaces above it.
        above = ancestors(scope, desired)
        desired = replace(desired, layout=Layout(
            spaces=tuple(sp for sp in desired.layout.spaces if sp.unit_key in scope.units | above),
            rooms=tuple(r for r in desired.layout.rooms if r.unit_key in scope.units),
        ))  # fmt: skip
        if not as_json:
            click.echo(f"scope: {scope.label}")
    if as_json:
        click.echo(json.dumps(_layout_json(desired), ensure_ascii=False, indent=2))
    else:
        limit = cfg.layout.max_room_size
        server = cfg.homeserver.server_name
        rooms_by_unit: dict[str, list[Any]] = {}
        for r in desired.layout.rooms:
            rooms_by_unit.setdefault(r.unit_key, []).append(r)
        depth: dict[str, int] = {}
        for s in desired.layout.spaces:
            depth[s.unit_key] = 0 if s.parent_key is None else depth.get(s.parent_key, 0) + 1
            pad = "  " * depth[s.unit_key]
            click.echo(f"{pad}[space] {s.name}  #{s.alias}:{server}  ({len(s.members)} joined)")
            for r in rooms_by_unit.get(s.unit_key, []):
                click.echo(f"{pad}  [room] {r.name}  #{r.alias}:{server}  {len(r.members)}/{limit}")
        sizes = [len(r.members) for r in desired.layout.rooms]
        click.echo(
            f"{len(desired.layout.spaces)} spaces, {len(desired.layout.rooms)} rooms, "
            f"{sum(sizes)} people placed, largest room {max(sizes, default=0)} (limit {limit}, "
            f"including 1 seat for the provisioner)"
        )
    if not snap.complete:
        click.echo(f"warning: the directory read was incomplete: {snap.stop_reason}", err=True)
        sys.exit(exitcodes.INCOMPLETE_READ)


def _excluded_localparts(cfg: Config) -> set[str]:
    return {uid[1:].split(":", 1)[0] for uid in cfg.exclude}


def _print_plan(plan: Plan, check: RemovalCheck, *, lines: int = 5) -> None:
    counts = plan.counts()
    click.echo(f"plan: {len(plan.actions)} actions" + (" (nothing to do)" if not plan.actions else ""))
    by_kind: dict[str, list[str]] = {}
    for a in plan.actions:
        by_kind.setdefault(a.kind, []).append(describe(a))
    for kind, n in counts.items():
        click.echo(f"  {kind:<16} {n}")
        for line in by_kind[kind][:lines]:
            click.echo(f"      {line}")
        if n > lines:
            click.echo(f"      … {n - lines} more")
    for note in plan.notes:
        click.echo(f"  note: {note}")
    if plan.held_removals:
        click.echo(f"  held removals  {plan.held_removals} (the directory read is not trusted)")
    click.echo(f"  removals       {check.people} people of {check.managed} managed lose access")


def _sync_run(cfg: Config, *, apply: bool, saved: Plan | None, allow: int | None, quiet: bool,
              full_read: bool, units: tuple[str, ...]) -> sync.RunResult:  # fmt: skip
    snapshot = read_snapshot(cfg)
    if not snapshot.complete:
        click.echo(f"warning: directory read incomplete ({snapshot.stop_reason}): no removals", err=True)
    try:
        result = asyncio.run(
            sync.run(cfg, apply=apply, saved_plan=saved, allow_removals=allow, progress=not quiet,
                     snapshot=snapshot, full_read=full_read, units=units)
        )  # fmt: skip
    except ScopeError as e:
        fail(f"{e}; nothing was done", exitcodes.CONFIG)
    except HomeserverError as e:
        fail(f"homeserver {cfg.homeserver.url}: {e}", exitcodes.HOMESERVER)
    except OSError as e:
        fail(f"cannot reach the homeserver at {cfg.homeserver.url}: {e}", exitcodes.HOMESERVER)
    return result


def _run(obj: Context, *, apply: bool, plan_path: str | None, out: str | None, allow: int | None,
         quiet: bool, full_read: bool = False, units: tuple[str, ...] = ()) -> None:  # fmt: skip
    cfg = obj.config(token_required=True)
    saved = None
    if plan_path:
        try:
            with open(plan_path, encoding="utf-8") as fh:
                saved = Plan.from_json(fh.read())
        except (OSError, ValueError, KeyError, TypeError) as e:
            fail(f"cannot use the saved plan {plan_path}: {e}", exitcodes.CONFIG)
    with contextlib.ExitStack() as held:
        if apply:
            # Before reading anything: a refused run must not cost the directory a full read.
            try:
                held.enter_context(runlock.hold(cfg.sync.state_dir, "run", "sync"))
            except runlock.Locked as e:
                fail(str(e), exitcodes.LOCKED)
        result = _sync_run(
            cfg, apply=apply, saved=saved, allow=allow, quiet=quiet, full_read=full_read, units=units
        )
    _print_plan(result.plan, result.removal_check)
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(result.plan.to_json())
        click.echo(f"plan saved to {out}")
    if result.report is not None:
        r = result.report
        click.echo(
            f"applied in {r.seconds:.1f}s: " + ", ".join(f"{k} {v}" for k, v in sorted(r.done.items()))
        )
        click.echo(f"requests: {result.stats}")
        for kind, err in r.failed[:20]:
            click.echo(f"  failed {kind}: {err}", err=True)
    if result.message:
        click.echo(("error: " if result.exit_code else "") + result.message, err=True)
    sys.exit(result.exit_code)


@main.command()
@click.option("--out", type=click.Path(dir_okay=False), help="Save the plan as JSON for `sync --plan`.")
@click.option("--allow-removals", type=click.IntRange(0), default=None, help="Accept up to N removals.")
@unit_option
@click.pass_obj
def plan(obj: Context, out: str | None, allow_removals: int | None, units: tuple[str, ...]) -> None:
    """Dry run: what a sync would do (nothing is written to the server)."""
    _run(obj, apply=False, plan_path=None, out=out, allow=allow_removals, quiet=True, units=units)


@main.command("sync")
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Apply this saved plan; refused if the directory or the server changed since.",
)
@click.option(
    "--allow-removals",
    type=click.IntRange(0),
    default=None,
    help="Let this run lock or kick up to N people even above the safety threshold.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--full-read", is_flag=True, help="Read every room and profile again (no cache).")
@unit_option
@click.pass_obj
def sync_cmd(
    obj: Context, plan_path: str | None, allow_removals: int | None, quiet: bool, full_read: bool,
    units: tuple[str, ...],
) -> None:  # fmt: skip
    """Make the server match the directory (with --unit: only those departments)."""
    _run(
        obj, apply=True, plan_path=plan_path, out=None, allow=allow_removals, quiet=quiet,
        full_read=full_read, units=units,
    )  # fmt: skip


@main.command()
@unit_option
@click.pass_obj
def status(obj: Context, units: tuple[str, ...]) -> None:
    """The last run, the managed people, and every managed room with its size against the limit.

    With --unit: that unit as the server has it — people, rooms and their sizes, moderators, last change.
    """
    cfg = obj.config(token_required=True)
    path = os.path.join(cfg.sync.state_dir, "last_run.json")
    try:
        with open(path, encoding="utf-8") as fh:
            last = json.load(fh)
        when = datetime.fromtimestamp(last["finished_at"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        click.echo(f"last run {last['run']} at {when}: exit {last['exit_code']}, {last['seconds']:.1f}s")
        click.echo(f"  directory: {last['directory']}")
        click.echo(
            f"  done: {last['done']}  failed: {len(last['failed'])}  held removals: {last['held_removals']}"
        )
        for kind, err in last["failed"][:10]:
            click.echo(f"    {kind}: {err}")
    except FileNotFoundError:
        click.echo(f"no run recorded yet in {cfg.sync.state_dir}")
    except (OSError, ValueError, KeyError) as e:
        click.echo(f"cannot read {path}: {e}", err=True)
    detection_broken = _watch_status(cfg)

    async def read() -> Any:
        assert cfg.homeserver.admin_token is not None
        async with HomeserverClient(cfg.homeserver.url, cfg.homeserver.admin_token) as client:
            who = await client.whoami()
            return await observe(client, who.user_id)

    try:
        observed = asyncio.run(read())
    except (HomeserverError, OSError) as e:
        fail(f"homeserver {cfg.homeserver.url}: {e}", exitcodes.HOMESERVER)
    locked = sum(1 for e in observed.registry.values() if e.locked_since is not None)
    click.echo(f"managed people: {len(observed.registry)} ({locked} locked by the provisioner)")
    if units:
        _unit_status(cfg, observed, units)
        if detection_broken:
            sys.exit(exitcodes.DETECTION)
        return
    limit = cfg.layout.max_room_size
    over = 0
    for room in sorted(observed.rooms.values(), key=lambda r: (r.kind, r.name or "")):
        size = len(room.members)
        flag = "  OVER LIMIT" if size > limit else ""
        over += size > limit
        click.echo(f"  [{room.kind}] {room.name}  #{room.alias}  {size}/{limit}{flag}")
    click.echo(f"{len(observed.rooms)} managed rooms and spaces, {over} over the limit")
    if detection_broken:
        # Last, so that everything above is shown: the watch runs and its runs succeed, which is why only
        # this exit code lets monitoring see that leavers wait for the fallback's read, not seconds.
        sys.exit(exitcodes.DETECTION)


def _server_units(observed: Observed) -> list[Unit]:
    """The units as the server has them: each managed space, its path from its topic (the sync writes the
    full path there), its parent from the space that links it."""
    spaces = {k: r for k, r in observed.rooms.items() if r.kind == "space"}
    by_id = {r.room_id: k for k, r in spaces.items()}
    parent = {by_id[c]: k for k, r in spaces.items() for c in r.children if c in by_id}
    out = []
    for key, r in spaces.items():
        # The organisation's own space is not a unit one names: a scope of everything is no --unit at all.
        if key != ROOT_UNIT:
            path = tuple(p.strip() for p in (r.topic or r.name or key).split(" / ") if p.strip())
            out.append(Unit(key, path, parent.get(key) or ROOT_UNIT))
    return out


def _last_change(audit_log: str, rooms: set[str], people: set[str]) -> str:
    """The newest audit line about these rooms or people (the log is appended in time order)."""
    last: dict[str, Any] | None = None
    try:
        with open(audit_log, encoding="utf-8") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                    action = entry["action"]
                except (ValueError, KeyError, TypeError):
                    continue
                keys = {action.get(k) for k in ("key", "room_key", "parent_key", "child_key", "user_id")}
                if keys & (rooms | people):
                    last = entry
    except FileNotFoundError:
        return "never (no audit log yet)"
    except OSError as e:
        return f"unknown (cannot read {audit_log}: {e})"
    if last is None:
        return "none in the audit log"
    what = describe(action_from_dict(last["action"]))
    return f"{_when(last.get('ts'))}, run {last.get('run')}: {what} ({last.get('result')})"


def _unit_status(cfg: Config, observed: Observed, units: tuple[str, ...]) -> None:
    server_units = _server_units(observed)
    try:
        scope = unit_scope(units, None, server_units, cfg.directory.base_dn, cfg.layout.org_name)
    except ScopeError as e:
        fail(f"{e} (as the server's spaces name it; has the unit been synced?)", exitcodes.CONFIG)
    assert scope is not None
    rooms = {
        k: r
        for k, r in observed.rooms.items()
        if (k if r.kind == "space" else k.rpartition("#")[0]) in scope.units
    }
    service = {*cfg.exclude, *(u for u in (cfg.bot_user_id,) if u)}
    powered = {u for r in rooms.values() for u, lvl in r.power_users.items() if lvl >= 100}
    people = {m for r in rooms.values() if r.kind == "room" for m in r.members} - service - powered
    locked = sorted(u for u in people if (seen := observed.users.get(u)) is not None and seen.locked)
    limit = cfg.layout.max_room_size
    click.echo(f"unit: {scope.label} ({len(scope.units)} units with the ones below it)")
    click.echo(f"  people: {len(people)} in its rooms ({len(locked)} locked)")
    for r in sorted(rooms.values(), key=lambda r: (r.kind != "space", r.topic or "", r.name or "")):
        size = len(r.members)
        flag = "  OVER LIMIT" if size > limit else ""
        click.echo(f"  [{r.kind}] {r.name}  #{r.alias}  {size}/{limit}{flag}")
        mods = sorted(
            f"{u} ({lvl})" for u, lvl in r.power_users.items() if 0 < lvl < 100 and u not in service
        )
        if mods:
            click.echo(f"      moderators: {', '.join(mods)}")
    click.echo(f"  last change: {_last_change(cfg.sync.audit_log, set(rooms), people)}")


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _watch_status(cfg: Config) -> bool:
    """Print the watch's state; True if it is running with change detection that cannot work."""
    path = os.path.join(cfg.sync.state_dir, "watch.json")
    try:
        with open(path, encoding="utf-8") as fh:
            w = json.load(fh)
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as e:
        click.echo(f"cannot read {path}: {e}", err=True)
        return False
    running = False
    try:
        with runlock.hold(cfg.sync.state_dir, "watch", "status probe"):
            alive = "NOT RUNNING (last seen as"
    except runlock.Locked:
        alive, running = "running (pid", True
    check, last = w.get("last_check") or {}, w.get("last_run") or {}
    click.echo(f"watch: {alive} {w.get('pid')}), change detection {w.get('detector')}")
    err = f", error: {check['error']}" if check.get("error") else ""
    click.echo(f"  last check {_when(check.get('at'))} ({check.get('ms', '?')} ms{err})")
    if last:
        msg = f": {last['message']}" if last.get("message") else ""
        click.echo(
            f"  last run {_when(last.get('at'))}: {last.get('kind')}, exit {last.get('exit_code')}{msg}"
        )
    if w.get("problem"):
        click.echo(f"  needs attention: {w['problem']}")
    fb = w.get("fallback")
    if not fb:
        return False
    click.echo(f"  CHANGE DETECTION NOT WORKING since {_when(fb.get('since'))}: {fb.get('reason')}")
    read = fb.get("last_read") or {}
    err = f", {read['error']}" if read.get("error") else ""
    when, ms, people = _when(read.get("at")), read.get("ms", "?"), read.get("people", "?")
    every = fb.get("every_seconds")
    click.echo(
        f"  fallback: the roster is read every {every} s; last read {when} ({ms} ms, {people} people{err})"
    )
    return running


@main.command("watch")
@click.pass_obj
def watch_cmd(obj: Context) -> None:
    """Run for ever: lock leavers within seconds of a directory change, sync the rest (Ctrl-C stops)."""
    import signal

    from provisioner.watch import watch_main

    cfg = obj.config(token_required=True)

    async def main_() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await watch_main(cfg, stop)

    try:
        sys.exit(asyncio.run(main_()))
    except runlock.Locked as e:
        fail(str(e), exitcodes.LOCKED)


@main.command()
@click.option(
    "--dir",
    "root",
    default=".demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Everything the demo writes lives here; run again with the same --dir to resume.",
)
@click.option("--people", type=click.IntRange(10, 250_000), default=2000, show_default=True)
@click.option(
    "--once", is_flag=True, help="Bring everything up, sync, print the login, then stop (for tests)."
)
@click.option(
    "--workers",
    is_flag=True,
    help="The production topology: Synapse main + workers on a private PostgreSQL and Redis, behind nginx.",
)
def demo(root: str, people: int, once: bool, workers: bool) -> None:
    """Run the whole thing on this machine: slapd + Synapse + sync + event bot, and print how to log in."""
    from provisioner.demo import demo_main

    sys.exit(demo_main(root, people, once, workers=workers))


@main.command("deploy-config")
@click.option(
    "--public-baseurl", required=True, help="Where clients reach Synapse, e.g. https://matrix.city.gov/"
)
@click.option("--element-url", default=None, help="Element Web's own URL, e.g. https://chat.city.gov/")
@click.option("--target", type=click.Choice(["compose", "host"]), default="compose", show_default=True)
@click.option("--sync-workers", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--event-persisters", type=click.IntRange(1, 16), default=1, show_default=True)
@click.option(
    "--ldap-password-path",
    default="/run/secrets/ldap_password",
    show_default=True,
    help="The LDAP service password file as Synapse sees it (for the directory login module).",
)
@click.option("--out", "out_dir", default="deploy", show_default=True, type=click.Path(file_okay=False))
@click.option(
    "--check",
    is_flag=True,
    help="Run Synapse's own config check (on the server, where the files' paths exist).",
)
@click.pass_obj
def deploy_config(
    obj: Context, public_baseurl: str, element_url: str | None, target: str, sync_workers: int,
    event_persisters: int, ldap_password_path: str, out_dir: str, check: bool,
) -> None:  # fmt: skip
    """Render production Synapse, worker, nginx and Element files from the config, and check them."""
    from pathlib import Path

    from provisioner.deploy import check_deployment, ensure_secrets, standard_deployment, write_deployment
    from provisioner.synapse.auth import module_config_from
    from provisioner.synapse.config import SynapseError

    cfg = obj.config()
    login = module_config_from(cfg) | {"bind_password_file": ldap_password_path}
    try:
        d = standard_deployment(
            cfg.homeserver.server_name, public_baseurl, element_url=element_url,
            target="host" if target == "host" else "compose",
            sync_workers=sync_workers, event_persisters=event_persisters, login=login,
        )  # fmt: skip
        out = Path(out_dir)
        written = write_deployment(out, d)
        created = ensure_secrets(out / "secrets", d.database)
        if check:
            check_deployment(out, d)
    except (ValueError, OSError, SynapseError) as e:
        fail(str(e), exitcodes.CONFIG)
    click.echo(f"wrote {len(written)} files under {out_dir}; new secrets: {', '.join(created) or 'none'}")
    if check:
        click.echo("Synapse's own config check passed for the main process and every worker.")
    else:
        click.echo(
            "run with --check on the server (where the secret paths exist) for Synapse's own config check"
        )


@main.command("sample-directory")
@click.option("--people", type=click.IntRange(1, 1_000_000), default=2000, show_default=True)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="LDIF file to write.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--base-dn", default="dc=mos,dc=test", show_default=True)
def sample_directory(people: int, out_path: str, seed: int, base_dn: str) -> None:
    """Write a generated city-government directory as LDIF (realistic Russian names and units)."""
    from provisioner.sample import write_ldif

    sample = write_ldif(out_path, people, seed=seed, base_dn=base_dn)
    click.echo(f"wrote {out_path}: {sample.summary()}")


if __name__ == "__main__":  # pragma: no cover
    main()
