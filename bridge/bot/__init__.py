"""The event bot's runtime: matrix-nio with end-to-end encryption, executing what the service decides.

The pure domain (commands, RSVP, reminders, rendering, the store) is :mod:`bridge.events`; this package is
the part that speaks Matrix, split along its seams:

* :mod:`~bridge.bot.config` — :class:`BotConfig` and the access token (no nio import);
* :mod:`~bridge.bot.messages` — the content of what the bot sends (notices, polls) and reads (replies);
* :mod:`~bridge.bot.directory` — power levels, profiles and the unit layout read from the homeserver;
* :mod:`~bridge.bot.intake` — the sync loop: joins invited rooms, decrypts, turns events into service calls;
* :mod:`~bridge.bot.sender` — the outbox sender with its lanes and the measured send rate;
* :mod:`~bridge.bot.effects` — one effect executed through nio (messages, polls, direct chats, uploads);
* :mod:`~bridge.bot.scheduler` — the reminder scheduler on the injected clock;
* :mod:`~bridge.bot.app` — :class:`~bridge.bot.app.EventBot`, which owns the client, the store and the
  three background tasks (sync, sender, reminders), and :func:`~bridge.bot.app.open_bot`.

Rule: events older than the bot's arrival in a room (its join, or the first sync that showed the room) are
history and never acted on.

This ``__init__`` imports nothing, so reading the bot's config does not load nio.
"""
