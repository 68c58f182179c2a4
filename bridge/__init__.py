"""The Matrix-facing runtime: :mod:`bridge.matrix` (the one homeserver client), :mod:`bridge.events` (the
event bot's pure domain), :mod:`bridge.bot` (the bot's runtime over matrix-nio) and :mod:`bridge.cli`."""
