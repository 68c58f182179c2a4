"""The ``provisioner`` command. Thin: parse arguments, call the modules, print, map errors to exit codes."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections import Counter
from dataclasses import asdict
from typing import Any, NoReturn

import click

from provisioner import exitcodes
from provisioner.config import Config, ConfigError, load_config
from provisioner.desired import Desired, desired_state
from provisioner.directory import interpret
from provisioner.ldap_reader import DirectoryError, read_directory
from provisioner.model import DirectorySnapshot

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
    except DirectoryError as e:
        fail(str(e), exitcodes.DIRECTORY)
    return interpret(result, cfg.directory, skip_log=False)


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
        "skipped_by_reason": dict(reasons),
        "complete": snapshot.complete,
        "stop_reason": snapshot.stop_reason,
    }


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def directory(obj: Context, as_json: bool) -> None:
    """Read the directory and print what was found (no homeserver needed)."""
    cfg = obj.config()
    snap = read_snapshot(cfg)
    summary = _summary(snap)
    if as_json:
        summary["skipped_entries"] = [asdict(s) for s in snap.skipped]
        click.echo(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        click.echo(f"directory {cfg.directory.uri}, base {cfg.directory.base_dn}")
        click.echo(f"  entries read : {snap.entries_read}")
        enabled, disabled = len(snap.enabled), len(snap.disabled)
        click.echo(f"  people       : {len(snap.people)} ({enabled} enabled, {disabled} disabled)")
        click.echo(f"  units        : {len(snap.units)}")
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
@click.pass_obj
def layout(obj: Context, as_json: bool) -> None:
    """Plan the spaces and rooms from the directory (no homeserver needed)."""
    cfg = obj.config()
    snap = read_snapshot(cfg)
    desired = desired_state(snap, cfg, taken=_excluded_localparts(cfg))
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


@main.command("sample-directory")
@click.option("--people", type=click.IntRange(1, 1_000_000), default=2000, show_default=True)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="LDIF file to write.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--base-dn", default="dc=mos,dc=test", show_default=True)
def sample_directory(people: int, out_path: str, seed: int, base_dn: str) -> None:
    """Write a generated city-government directory as LDIF (realistic Russian names and units)."""
    from provisioner.sample import write_ldif

    stats = write_ldif(out_path, people=people, seed=seed, base_dn=base_dn)
    click.echo(f"wrote {out_path}: {stats}")


if __name__ == "__main__":  # pragma: no cover
    main()
