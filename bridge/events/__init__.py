"""The event bot's core: commands, RSVP, reminders, exports and rendering as pure functions over plain data.

Nothing in this package does I/O except :mod:`bridge.events.store` and the service that drives it
(:mod:`bridge.events.service` and the parts it delegates to, which reach the store and the directory through
:mod:`bridge.events.context`), and no module here imports nio or aiohttp: the transport in
:mod:`bridge.bot` executes the effects these functions return.
"""
