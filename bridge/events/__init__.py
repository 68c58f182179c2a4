"""The event bot's core: commands, RSVP, reminders, exports and rendering as pure functions over plain data.

Nothing in this package except :mod:`bridge.events.store` and :mod:`bridge.events.service` does I/O,
and no module here imports nio or aiohttp: the transport in :mod:`bridge.bot` executes the effects
these functions return.
"""
