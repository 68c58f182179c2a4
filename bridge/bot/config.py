"""The bot's settings as one frozen object, and where its access token comes from."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from bridge.events.reminders import DEFAULT_OFFSETS

TOKEN_ENV = "CIVMATRIX_BOT_TOKEN"


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


def read_token(token_file: Path | None) -> str:
    """The access token from ``token_file`` or the ``CIVMATRIX_BOT_TOKEN`` variable; never from argv."""
    if token_file is not None:
        return token_file.read_text(encoding="utf-8").strip()
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ValueError(
            f"no access token: set bot.access_token_file or the {TOKEN_ENV} environment variable"
        )
    return token
