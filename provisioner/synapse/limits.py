"""Browsing the organisation's space tree never meets a 429.

Synapse limits ``GET /_matrix/client/v1/rooms/{room}/hierarchy`` (a space's lobby, the space panel's
expansion) to 5 requests a second per person with a burst of 10, a limit written into
``RoomSummaryHandler`` rather than read from the config. A client opening a space makes one call per page
and per sub-space it expands; tried in a web client on the sample city, one opening of the organisation's
lobby drew 9–30 ``429 Too Many Requests`` and the room list never filled. With the whole organisation in
one tree, browsing it is what people do on their first day.

This module (``modules:`` of every rendered ``homeserver.yaml``, loaded by every process: the hierarchy
route goes to a sync worker in production) raises that one limiter to ``per_second`` / ``burst_count``
(default 20 / 300: a whole tree of a few hundred spaces browsed at once, while one person still cannot keep
a worker busy). A page costs at most 50 rooms' state lookups, from caches once warm.

The limiter is private to Synapse (no config key, no module callback reaches it: it is built without the
rate-limit callbacks). On a Synapse where it is not found the module logs an ERROR at start and the stock
limit stays; tests/test_space_tree_live.py fails on such an upgrade.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

DEFAULTS: Mapping[str, float] = {"per_second": 20.0, "burst_count": 300}


class SpaceBrowsing:
    """Synapse module: the space hierarchy's per-person rate limit, raised (config: ``per_second``,
    ``burst_count``)."""

    def __init__(self, config: Mapping[str, Any], api: Any) -> None:
        self._hs = api._hs
        self._per_second = float(config.get("per_second", DEFAULTS["per_second"]))
        self._burst = int(config.get("burst_count", DEFAULTS["burst_count"]))
        # The handler is built lazily by Synapse; take it once the process runs, not while modules load.
        self._hs.get_reactor().callWhenRunning(self.apply)

    @staticmethod
    def parse_config(config: Mapping[str, Any] | None) -> Mapping[str, Any]:
        config = dict(config or {})
        unknown = set(config) - set(DEFAULTS)
        if unknown:
            known = sorted(DEFAULTS)
            raise ValueError(f"SpaceBrowsing: unknown config keys {sorted(unknown)}; known: {known}")
        for key, low in (("per_second", 0.1), ("burst_count", 1)):
            value = config.get(key, DEFAULTS[key])
            if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
                raise ValueError(f"SpaceBrowsing: {key} is {value!r}; it must be a number ≥ {low}")
        return config

    def apply(self) -> None:
        limiter = getattr(self._hs.get_room_summary_handler(), "_ratelimiter", None)
        if limiter is None or not hasattr(limiter, "rate_hz") or not hasattr(limiter, "burst_count"):
            log.error(
                "space hierarchy: this Synapse has no RoomSummaryHandler._ratelimiter.rate_hz/burst_count; "
                "browsing spaces keeps Synapse's own limit (5/s, burst 10) and people will see 429s. Pin "
                "Synapse to a version the civmatrix tests pass on (see pyproject.toml)"
            )
            return
        limiter.rate_hz = self._per_second
        limiter.burst_count = self._burst
        log.info("space hierarchy: %g requests/s per person, burst %d", self._per_second, self._burst)
