"""The Matrix-facing runtime: the homeserver client and the event bot."""
