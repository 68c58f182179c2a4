"""The bot's config section (errors name the key) and the rule that the core imports no transport."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.cli import BotConfigError, load_config, parse_config


def base(tmp_path: Path, **bot: Any) -> dict[str, Any]:
    (tmp_path / "bot.token").write_text("syt_secret\n", encoding="utf-8")
    section: dict[str, Any] = {"user_id": "@events:city.test", "access_token_file": "bot.token"}
    section.update(bot)
    return {"homeserver": {"url": "https://matrix.city.test/"}, "bot": section}


def test_defaults(tmp_path: Path) -> None:
    cfg = parse_config(base(tmp_path), str(tmp_path / "c.yaml"), env={})
    assert cfg.homeserver_url == "https://matrix.city.test"
    assert cfg.access_token == "syt_secret" and "syt_secret" not in repr(cfg)
    assert cfg.timezone == "Europe/Moscow" and cfg.moderator_level == 50 and not cfg.remind_maybe
    assert cfg.reminder_offsets == (timedelta(hours=24), timedelta(hours=1))
    assert cfg.store == str(tmp_path / "civmatrix-bot.db") and cfg.crypto_store_dir == tmp_path / "bot-crypto"
    assert (cfg.nudge_before, cfg.checkin_before, cfg.checkin_after) == (
        timedelta(hours=24),
        timedelta(minutes=30),
        timedelta(hours=3),
    )


def test_attendance_keys(tmp_path: Path) -> None:
    cfg = parse_config(base(tmp_path, nudge_before="2d", checkin_before="1h", checkin_after=900),
                       str(tmp_path / "c.yaml"), env={})  # fmt: skip
    assert (cfg.nudge_before, cfg.checkin_before, cfg.checkin_after) == (
        timedelta(days=2),
        timedelta(hours=1),
        timedelta(minutes=15),
    )
    assert (
        parse_config(base(tmp_path, nudge_before="off"), str(tmp_path / "c.yaml"), env={}).nudge_before
        is None
    )


def test_all_keys(tmp_path: Path) -> None:
    cfg = parse_config(
        base(
            tmp_path,
            device_id="EVENTBOT",
            store="postgresql://bot@db/bot",
            timezone="Asia/Yekaterinburg",
            moderator_level=75,
            reminder_offsets=["1d", "90m", 600],
            remind_maybe=True,
            crypto_store_dir="/var/lib/bot",
        ),
        str(tmp_path / "c.yaml"),
        env={},
    )
    assert cfg.device_id == "EVENTBOT" and cfg.store == "postgresql://bot@db/bot"
    assert cfg.reminder_offsets == (timedelta(days=1), timedelta(minutes=90), timedelta(minutes=10))
    assert cfg.moderator_level == 75 and cfg.remind_maybe and cfg.crypto_store_dir == Path("/var/lib/bot")


def test_token_from_environment(tmp_path: Path) -> None:
    raw = base(tmp_path)
    del raw["bot"]["access_token_file"]
    assert parse_config(raw, "c.yaml", env={"CIVMATRIX_BOT_TOKEN": "t"}).access_token == "t"
    with pytest.raises(BotConfigError, match="bot.access_token_file"):
        parse_config(raw, "c.yaml", env={})


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"user_id": "events"}, "bot.user_id"),
        ({"timezone": "Mars/Olympus"}, "bot.timezone"),
        ({"moderator_level": 101}, "bot.moderator_level"),
        ({"moderator_level": True}, "bot.moderator_level"),
        ({"reminder_offsets": ["soon"]}, "bot.reminder_offsets"),
        ({"reminder_offsets": "24h"}, "bot.reminder_offsets"),
        ({"remind_maybe": "yes"}, "bot.remind_maybe"),
        ({"nudge_before": "soon"}, "bot.nudge_before"),
        ({"checkin_before": "off"}, "bot.checkin_before"),
        ({"checkin_after": 0}, "bot.checkin_after"),
        ({"access_token_file": "missing.token"}, "bot.access_token_file"),
        ({"colour": "red"}, "bot"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, change: dict[str, Any], key: str) -> None:
    with pytest.raises(BotConfigError) as e:
        parse_config(base(tmp_path, **change), str(tmp_path / "c.yaml"), env={})
    assert e.value.key == key and str(e.value).startswith(str(tmp_path / "c.yaml") + ":" + key)


def test_missing_sections(tmp_path: Path) -> None:
    with pytest.raises(BotConfigError, match="homeserver.url"):
        parse_config({"bot": {}}, "c.yaml", env={})
    with pytest.raises(BotConfigError, match=":bot:"):
        parse_config({"homeserver": {"url": "http://x"}}, "c.yaml", env={})
    p = tmp_path / "c.yaml"
    p.write_text("homeserver: [", encoding="utf-8")
    with pytest.raises(BotConfigError, match="not valid YAML"):
        load_config(str(p))


def test_cli_reports_config_errors(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("homeserver: {url: http://x}\nbot: {user_id: nope}\n", encoding="utf-8")
    r = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "--config", str(p), "run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "bot.user_id" in r.stderr


def test_core_imports_no_transport() -> None:
    code = (
        "import sys\n"
        "import bridge.events.commands, bridge.events.rsvp, bridge.events.reminders, bridge.events.export\n"
        "import bridge.events.render, bridge.events.model, bridge.events.service, bridge.events.store\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('nio', 'aiohttp')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_status_shows_outbox_dead_letters_and_last_sync(tmp_path: Path) -> None:
    import asyncio
    import json
    from datetime import UTC, datetime

    import yaml

    from bridge.events.store import DeadLetter, DeleteOutbox, PutOutbox, SetValue, open_sqlite

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(base(tmp_path, store="bot.db")), encoding="utf-8")
    t0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

    async def seed() -> None:
        s = open_sqlite(str(tmp_path / "bot.db"))
        await s.open()
        await s.write([PutOutbox("$a#0", t0, '{"t": "dm"}'), PutOutbox("$b#0", t0, '{"t": "reply"}'),
                       SetValue("last_sync_at", t0.isoformat())])  # fmt: skip
        await s.write(
            [DeadLetter("$b#0", t0, "M_FORBIDDEN: the bot is not in !gone:x"), DeleteOutbox("$b#0")]
        )
        await s.close()

    asyncio.run(seed())
    cmd = [sys.executable, "-m", "bridge.cli", "--config", str(cfg_path), "status"]
    out = json.loads(subprocess.run([*cmd, "--json"], capture_output=True, text=True, check=True).stdout)
    assert out["outbox_depth"] == 1 and out["outbox_oldest"] == t0.isoformat()
    assert out["dead_letters"] == 1 and out["dead_letters_latest"][0]["kind"] == "reply"
    assert out["last_sync"] == t0.isoformat() and out["last_sync_age_s"] > 0
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert (
        "outbox: 1 waiting" in text
        and "dead letters: 1" in text
        and "M_FORBIDDEN: the bot is not in !gone:x" in text
    )
