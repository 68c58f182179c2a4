"""``bridge --config FILE run|status|search``: the event bot's command line and the directory search service.

``status`` reads the bot's store (it may run while the bot runs): outbox depth and its oldest entry, the dead
letters (messages the homeserver refused for good, with the reason) and the time of the last sync.
``search`` serves the directory search; its ``search:`` keys are documented in :mod:`bridge.search.config`.

The shared YAML file is read once; this module parses its ``bot:`` section (and ``homeserver.url``) into a
frozen :class:`~bridge.bot.config.BotConfig`. Errors name the file and the dotted key. The token is read from
``bot.access_token_file`` or the ``CIVMATRIX_BOT_TOKEN`` variable, never from the command line.

``bot:`` keys:

* ``user_id`` (required): the bot's Matrix id, e.g. ``@events:city.example``.
* ``access_token_file``: file with the bot's own access token (not the provisioner's, not an admin's).
* ``device_id``: the device of that token; it keys the persistent crypto store.
* ``store``: SQLite file path (default ``civmatrix-bot.db``) or a PostgreSQL DSN (``postgresql://...``).
* ``crypto_store_dir``: where the end-to-end keys live (default ``bot-crypto``); back it up with the store.
* ``timezone``: the organisation's zone for dates people type (default ``Europe/Moscow``).
* ``moderator_level``: the older name of ``layout.moderator_power_level``, the level that creates, edits and
  cancels events (default 50); when both are set they must agree.
* ``reminder_offsets``: list like ``["24h", "1h"]`` (units ``d``, ``h``, ``m``, ``s``; default 24h and 1h).
* ``remind_maybe``: also remind people who answered "maybe" (default false).
* ``nudge_before``: when the automatic nudge reaches required invitees without an answer, before the deadline
  (or the start); a duration (default ``24h``) or ``off``.
* ``checkin_before`` / ``checkin_after``: the check-in window around the start (default ``30m`` / ``3h``).

Relative paths are relative to the config file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
import yaml

from bridge.bot.app import open_bot
from bridge.bot.config import TOKEN_ENV, BotConfig
from bridge.events.reminders import DEFAULT_OFFSETS
from bridge.events.store import LAST_SYNC_KEY, open_store
from bridge.matrix.contract import ModeratorLevelError, moderator_level
from bridge.matrix.secrets import SecretError, read_secret
from bridge.search.config import SearchConfigError, index_path

log = logging.getLogger(__name__)

BOT_KEYS = {
    "user_id",
    "access_token_file",
    "device_id",
    "store",
    "timezone",
    "moderator_level",
    "reminder_offsets",
    "remind_maybe",
    "nudge_before",
    "checkin_before",
    "checkin_after",
    "crypto_store_dir",
}


class BotConfigError(Exception):
    """A problem in the config file: ``path:key: message``."""

    def __init__(self, message: str, path: str, key: str | None = None) -> None:
        self.message, self.path, self.key = message, path, key
        super().__init__(f"{path}:{key}: {message}" if key else f"{path}: {message}")


_DURATION = re.compile(r"^\s*(\d+)\s*([dhms])\s*$")
_UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(value: object) -> timedelta:
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, int):
        return timedelta(seconds=value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return timedelta(seconds=int(m[1]) * _UNIT[m[2]])
    raise ValueError(f"{value!r} is not a duration like 24h, 90m or 3600")


def parse_config(raw: Mapping[str, Any], path: str, *, env: Mapping[str, str] | None = None) -> BotConfig:
    """Validate the ``bot:`` section; read the token file. No other side effects."""
    base = Path(path).parent

    def err(msg: str, key: str | None = None) -> BotConfigError:
        return BotConfigError(msg, path, key)

    hs = raw.get("homeserver")
    if not isinstance(hs, Mapping) or not isinstance(hs.get("url"), str) or not hs["url"]:
        raise err("the homeserver URL is required", "homeserver.url")
    bot = raw.get("bot")
    if not isinstance(bot, Mapping):
        raise err("a bot: section is required to run the event bot", "bot")
    unknown = sorted(set(map(str, bot)) - BOT_KEYS)
    if unknown:
        raise err(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(BOT_KEYS))}", "bot")

    def opt_str(key: str, default: str | None) -> str | None:
        v = bot.get(key, default)
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise err("must be a non-empty string", f"bot.{key}")
        return v

    user_id = opt_str("user_id", None)
    if user_id is None or not re.fullmatch(r"@[^:\s]+:\S+", user_id):
        raise err("must be a Matrix user id like @events:city.example", "bot.user_id")
    token_file = opt_str("access_token_file", None)
    token_path = None if token_file is None else base / token_file
    try:
        token = read_secret(file=token_path, env=TOKEN_ENV, environ=env)
    except SecretError as e:
        hint = "" if token_path else ", and bot.access_token_file is not set either"
        raise err(e.message + hint, "bot.access_token_file") from None
    tz_name = opt_str("timezone", "Europe/Moscow")
    assert tz_name is not None
    try:
        ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise err(
            f"unknown time zone {tz_name!r} (use an IANA name like Europe/Moscow)", "bot.timezone"
        ) from None
    try:
        level = moderator_level(raw)  # layout.moderator_power_level, or its older name bot.moderator_level
    except ModeratorLevelError as e:
        raise err(e.message, e.key) from None
    offsets_raw = bot.get("reminder_offsets")
    offsets: tuple[timedelta, ...] = DEFAULT_OFFSETS
    if offsets_raw is not None:
        if not isinstance(offsets_raw, list):
            raise err("must be a list like [24h, 1h]", "bot.reminder_offsets")
        try:
            offsets = tuple(sorted({parse_duration(v) for v in offsets_raw}, reverse=True))
        except ValueError as e:
            raise err(str(e), "bot.reminder_offsets") from None
        if any(o <= timedelta(0) for o in offsets):
            raise err("offsets must be positive", "bot.reminder_offsets")
    remind_maybe = bot.get("remind_maybe", False)
    if not isinstance(remind_maybe, bool):
        raise err("must be true or false", "bot.remind_maybe")

    def positive(key: str, default: str, *, may_be_off: bool = False) -> timedelta | None:
        value = bot.get(key, default)
        if may_be_off and value in ("off", False):
            return None
        try:
            span = parse_duration(value)
        except ValueError as e:
            raise err(str(e) + ("; or off" if may_be_off else ""), f"bot.{key}") from None
        if span <= timedelta(0):
            raise err("must be positive", f"bot.{key}")
        return span

    nudge_before = positive("nudge_before", "24h", may_be_off=True)
    checkin_before = positive("checkin_before", "30m")
    checkin_after = positive("checkin_after", "3h")
    assert checkin_before is not None and checkin_after is not None
    store = opt_str("store", "civmatrix-bot.db")
    assert store is not None
    if "://" not in store and "=" not in store:
        store = str(base / store)
    crypto = opt_str("crypto_store_dir", "bot-crypto")
    assert crypto is not None
    try:
        search_index = index_path(raw, path)
    except SearchConfigError as e:
        raise err(e.message, e.key) from None
    return BotConfig(
        homeserver_url=str(hs["url"]).rstrip("/"),
        user_id=user_id,
        access_token=token,
        device_id=opt_str("device_id", None),
        store=store,
        crypto_store_dir=base / crypto,
        timezone=tz_name,
        moderator_level=level,
        reminder_offsets=offsets,
        remind_maybe=remind_maybe,
        nudge_before=nudge_before,
        checkin_before=checkin_before,
        checkin_after=checkin_after,
        search_index=search_index,
    )


def load_config(path: str) -> BotConfig:
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except OSError as e:
        raise BotConfigError(f"cannot read: {e.strerror}", path) from None
    except yaml.YAMLError as e:
        raise BotConfigError(f"not valid YAML: {e}", path) from None
    if not isinstance(raw, Mapping):
        raise BotConfigError("the file must hold a mapping of sections", path)
    return parse_config(raw, path)


@click.group()
@click.option(
    "--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML config file"
)
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
@click.pass_context
def main(ctx: click.Context, config_path: str, verbose: bool) -> None:
    """The civmatrix event bot."""
    ctx.obj = {"config": config_path, "verbose": verbose}


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Connect and serve until interrupted."""
    logging.basicConfig(
        level=logging.DEBUG if ctx.obj["verbose"] else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not ctx.obj["verbose"]:
        # nio logs every state event and key exchange at INFO; the bot's own lines are what operators need.
        for noisy in ("nio", "peewee"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        cfg = load_config(ctx.obj["config"])
    except BotConfigError as e:
        raise click.ClickException(str(e)) from None

    async def go() -> None:
        bot = await open_bot(cfg)
        await bot.run_forever()

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        log.info("stopped")


@main.command()
@click.pass_context
def search(ctx: click.Context) -> None:
    """Serve the directory search (``user_directory/search``) from the sync's snapshot (``search:``)."""
    from bridge.search.config import parse_search
    from bridge.search.service import serve

    logging.basicConfig(
        level=logging.DEBUG if ctx.obj["verbose"] else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    path = ctx.obj["config"]
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except OSError as e:
        raise click.ClickException(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise click.ClickException(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, Mapping):
        raise click.ClickException(f"{path}: the file must hold a mapping of sections")
    try:
        cfg = parse_search(raw, path)
    except SearchConfigError as e:
        raise click.ClickException(str(e)) from None
    try:
        asyncio.run(serve(cfg))
    except KeyboardInterrupt:
        log.info("stopped")
    except OSError as e:
        raise click.ClickException(
            f"cannot listen on {cfg.host}:{cfg.port} (search.listen): {e.strerror}"
        ) from None


async def read_status(cfg: BotConfig, now: datetime, dead_shown: int = 10) -> dict[str, Any]:
    store = open_store(cfg.store)
    await store.open()
    try:
        depth, oldest = await store.outbox_stats()
        dead_total, dead = await store.dead_letters(dead_shown)
        last_sync = await store.get_value(LAST_SYNC_KEY)
    finally:
        await store.close()
    return {
        "outbox_depth": depth,
        "outbox_oldest": oldest.isoformat() if oldest else None,
        "outbox_oldest_age_s": round((now - oldest).total_seconds(), 1) if oldest else None,
        "dead_letters": dead_total,
        "dead_letters_latest": [
            {"id": d.id, "failed_at": d.failed_at.isoformat(), "reason": d.reason, "kind": _kind(d.payload)}
            for d in dead
        ],
        "last_sync": last_sync,
        "last_sync_age_s": (
            round((now - datetime.fromisoformat(last_sync)).total_seconds(), 1) if last_sync else None
        ),
    }


def _kind(payload: str) -> str:
    try:
        return str(json.loads(payload).get("t", "?"))
    except ValueError:
        return "?"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Outbox depth and oldest entry, dead letters, last sync (read from the bot's store)."""
    try:
        cfg = load_config(ctx.obj["config"])
    except BotConfigError as e:
        raise click.ClickException(str(e)) from None
    st = asyncio.run(read_status(cfg, datetime.now(UTC)))
    if as_json:
        click.echo(json.dumps(st, ensure_ascii=False, indent=2))
        return
    oldest = (
        f" (oldest {st['outbox_oldest']}, {st['outbox_oldest_age_s']} s ago)" if st["outbox_oldest"] else ""
    )
    click.echo(f"outbox: {st['outbox_depth']} waiting{oldest}")
    click.echo(f"dead letters: {st['dead_letters']}")
    for d in st["dead_letters_latest"]:
        click.echo(f"  {d['failed_at']}  {d['kind']:<9} {d['id']}: {d['reason']}")
    sync = f"{st['last_sync']} ({st['last_sync_age_s']} s ago)" if st["last_sync"] else "never"
    click.echo(f"last sync: {sync}")


if __name__ == "__main__":
    main()
