"""The bot's settings as one frozen object, and where its access token comes from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from bridge.events.reminders import DEFAULT_OFFSETS
from bridge.matrix.retry import RetryPolicy

TOKEN_ENV = "CIVMATRIX_BOT_TOKEN"
# The bot's loops (sync, send lanes, task restarts) outlive an outage: they retry without a count limit,
# waiting 1 s, 2 s, 4 s ... up to a minute (jittered). ``max_retries`` bounds the retries inside one nio call.
BOT_RETRY = RetryPolicy(max_retries=5, base_delay=1.0, multiplier=2.0, max_delay=60.0)


@dataclass(frozen=True, slots=True)
class BotConfig:
    homeserver_url: str
    user_id: str
    access_token: str = field(repr=False)
    device_id: str | None
    store: str
    crypto_store_dir: Path
    timezone: str = "Europe/Moscow"
    moderator_level: int = 50
    reminder_offsets: tuple[timedelta, ...] = DEFAULT_OFFSETS
    remind_maybe: bool = False
    sync_timeout_ms: int = 30_000
    retry: RetryPolicy = BOT_RETRY
    nudge_before: timedelta | None = timedelta(hours=24)  # the automatic nudge of invitees; None: off
    checkin_before: timedelta = timedelta(minutes=30)
    checkin_after: timedelta = timedelta(hours=3)
    search_index: Path | None = None  # the directory search snapshot (search.index), for !who
