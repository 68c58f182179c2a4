"""The event bot assembled: one nio client and one store shared by the intake, the sender and the scheduler.

Three owned tasks run while the bot is up (all cancelled by :meth:`EventBot.stop`):

* the sync loop (:class:`~bridge.bot.intake.Intake`): reads ``/sync`` and hands new events to the service;
* the sender (:class:`~bridge.bot.sender.Sender`): executes queued effects through
  :class:`~bridge.bot.effects.Effects`; it runs apart from the sync loop because a new DM room must first
  show up in a sync before an encrypted message can be sent to it;
* the reminder scheduler (:class:`~bridge.bot.scheduler.ReminderScheduler`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from zoneinfo import ZoneInfo

from nio import WhoamiResponse

from bridge.bot.client import BotClient
from bridge.bot.config import BotConfig
from bridge.bot.directory import MatrixDirectory
from bridge.bot.effects import Effects
from bridge.bot.intake import Intake
from bridge.bot.people import SnapshotPeople
from bridge.bot.scheduler import ReminderScheduler
from bridge.bot.sender import Sender
from bridge.events.clock import Clock, SystemClock
from bridge.events.service import EventService, Settings
from bridge.events.store import Store, open_store
from bridge.matrix.client import HomeserverClient
from bridge.matrix.errors import HomeserverError
from bridge.matrix.retry import Backoff

log = logging.getLogger(__name__)


class EventBot:
    """Owns the nio client, the store and the three background tasks; :meth:`start` / :meth:`stop`."""

    def __init__(self, cfg: BotConfig, store: Store, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock or SystemClock()
        self.client = BotClient(
            cfg.homeserver_url,
            cfg.user_id,
            retry=cfg.retry,
            device_id=cfg.device_id,
            store_path=str(cfg.crypto_store_dir),
        )
        self.directory = MatrixDirectory(self.client)
        self.service = EventService(
            store,
            self.clock,
            Settings(
                tz=ZoneInfo(cfg.timezone),
                moderator_level=cfg.moderator_level,
                reminder_offsets=cfg.reminder_offsets,
                remind_maybe=cfg.remind_maybe,
                nudge_before=cfg.nudge_before,
                checkin_before=cfg.checkin_before,
                checkin_after=cfg.checkin_after,
                uid_domain=cfg.user_id.split(":", 1)[-1],
            ),
            self.directory,
            SnapshotPeople(cfg.search_index) if cfg.search_index is not None else None,
        )
        self.effects = Effects(self.client, store, self.service)
        self.sender = Sender(store, self.effects.execute, clock=self.clock)
        self.intake = Intake(
            self.client,
            cfg,
            store,
            self.service,
            self.directory,
            retry=cfg.retry,
            on_effects=self._effects_queued,
            on_synced=self.effects.rooms_synced,
        )
        self.scheduler = ReminderScheduler(
            self.service, self.clock, self.sender.rate, self.intake.synced_once, self.sender.notify
        )
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def idle(self) -> asyncio.Event:
        """Set while the sender has nothing queued (tests wait on it)."""
        return self.sender.idle

    def wake_scheduler(self) -> None:
        """Re-check reminders now (tests call this after moving a manual clock)."""
        self.scheduler.wake()

    def _effects_queued(self) -> None:
        self.sender.notify()
        # A new or moved event may have an earlier reminder than the one the scheduler sleeps towards.
        self.scheduler.wake()

    # --- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.cfg.crypto_store_dir.mkdir(parents=True, exist_ok=True)
        await self.store.open()
        self.client.access_token = self.cfg.access_token
        who = await self.client.whoami()
        if not isinstance(who, WhoamiResponse):
            raise RuntimeError(f"the bot's access token was refused by {self.cfg.homeserver_url}: {who}")
        if who.user_id != self.cfg.user_id:
            raise RuntimeError(f"bot.user_id is {self.cfg.user_id} but the token belongs to {who.user_id}")
        device = who.device_id or self.cfg.device_id
        if self.cfg.device_id and who.device_id and who.device_id != self.cfg.device_id:
            raise RuntimeError(
                f"bot.device_id is {self.cfg.device_id} but the token's device is {who.device_id}"
            )
        if not device:
            raise RuntimeError("the server did not tell the token's device; set bot.device_id")
        if await self._is_server_admin():
            raise RuntimeError(
                f"{self.cfg.user_id} is a server admin: the bot must run as an ordinary account with its own "
                "token (a leaked bot token must not be able to administer the server)"
            )
        # The crypto store is keyed by user and device: the same device keeps the same keys across restarts.
        self.client.restore_login(self.cfg.user_id, device, self.cfg.access_token)
        if self.client.should_upload_keys:
            await self.client.keys_upload()
        for name, coro in (
            ("sync", self.intake.run),
            ("sender", self.sender.run),
            ("reminders", self.scheduler.run),
        ):
            self._tasks.append(asyncio.create_task(self._guard(name, coro), name=f"bot-{name}"))
        log.info("bot %s started with device %s", self.cfg.user_id, device)

    async def _is_server_admin(self) -> bool:
        """Only an admin may read the admin flag: any refusal or failure means "not admin"."""
        async with HomeserverClient(
            self.cfg.homeserver_url, self.cfg.access_token, retry=self.cfg.retry
        ) as homeserver:
            try:
                return await homeserver.is_admin(self.cfg.user_id)
            except HomeserverError:
                return False

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        await self.client.close()
        await self.store.close()

    async def run_forever(self) -> None:
        await self.start()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.stop()

    async def _guard(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        """Restart a task after an unexpected error instead of leaving the bot half-alive."""
        backoff = Backoff(self.cfg.retry)
        while True:
            try:
                await fn()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = backoff.next_delay()
                log.exception("bot task %s failed; restarting in %.0f s", name, delay)
                await asyncio.sleep(delay)


async def open_bot(cfg: BotConfig, clock: Clock | None = None) -> EventBot:
    """Build a bot with the store its config names; call ``start`` (or ``run_forever``) next."""
    return EventBot(cfg, open_store(cfg.store), clock)
