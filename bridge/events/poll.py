"""Native polls (Matrix 1.7 ``m.poll.*`` and MSC3381 ``org.matrix.msc3381.poll.*``): reading votes and
counting them the way clients do, so the bot and Element agree on what a vote means.

Pure: votes in, each person's counted selection out.

Rule 1. Both the stable and the unstable event types and content shapes are read.
Rule 2. Only a person's latest response counts (by ``origin_server_ts``, then event id for equal times).
Rule 3. An empty selection is an "unvote": the person has no vote, whatever they chose before.
Rule 4. A response naming an answer the poll does not have is spoiled: it replaces the earlier vote and
        counts for nothing. More selections than ``max_selections``: only the first ones count.
Rule 5. A redacted response is as if never sent: the person's vote before it counts again.
Rule 6. Responses after the poll ended (``m.poll.end`` by its sender) are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

POLL_START_TYPES = ("m.poll.start", "org.matrix.msc3381.poll.start")
POLL_RESPONSE_TYPES = ("m.poll.response", "org.matrix.msc3381.poll.response")
POLL_END_TYPES = ("m.poll.end", "org.matrix.msc3381.poll.end")


@dataclass(frozen=True, slots=True)
class Vote:
    event_id: str
    sender: str
    ts: int  # origin_server_ts, ms
    selections: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PollSpec:
    answer_ids: frozenset[str]
    max_selections: int = 1


def parse_response(etype: str, content: Mapping[str, Any]) -> tuple[str, tuple[str, ...]] | None:
    """(poll event id, selections) of a response of either shape (Rule 1); ``None`` if it is not one."""
    if etype not in POLL_RESPONSE_TYPES:
        return None
    rel = content.get("m.relates_to")
    target = rel.get("event_id") if isinstance(rel, Mapping) else None
    if not isinstance(target, str):
        return None
    sel = content.get("m.selections")
    if sel is None:
        unstable = content.get("org.matrix.msc3381.poll.response")
        sel = unstable.get("answers") if isinstance(unstable, Mapping) else None
    if not isinstance(sel, list):
        return None
    # A non-string id can name no answer: kept as is so that it spoils the vote (Rule 4).
    return target, tuple(s if isinstance(s, str) else repr(s) for s in sel)


def parse_start(content: Mapping[str, Any]) -> PollSpec | None:
    """The answers a poll offers, from either shape."""
    stable = content.get("m.poll")
    if isinstance(stable, Mapping):
        ids = [a.get("m.id") for a in stable.get("answers", []) if isinstance(a, Mapping)]
        most = stable.get("max_selections", 1)
    else:
        unstable = content.get("org.matrix.msc3381.poll.start")
        if not isinstance(unstable, Mapping):
            return None
        ids = [a.get("id") for a in unstable.get("answers", []) if isinstance(a, Mapping)]
        most = unstable.get("max_selections", 1)
    valid = frozenset(i for i in ids if isinstance(i, str))
    return PollSpec(valid, most if isinstance(most, int) and most >= 1 else 1)


def counted(spec: PollSpec, selections: tuple[str, ...]) -> tuple[str, ...]:
    """What one response counts for (Rules 3 and 4); empty means no vote."""
    if any(s not in spec.answer_ids for s in selections):
        return ()
    return selections[: spec.max_selections]


def tally(
    spec: PollSpec,
    votes: Iterable[Vote],
    redacted: frozenset[str] | set[str] = frozenset(),
    ended_at: int | None = None,
) -> dict[str, tuple[str, ...]]:
    """Each person's counted selection; people whose latest response counts for nothing are left out."""
    latest: dict[str, Vote] = {}
    for v in votes:
        if v.event_id in redacted or (ended_at is not None and v.ts > ended_at):
            continue
        cur = latest.get(v.sender)
        if cur is None or (v.ts, v.event_id) > (cur.ts, cur.event_id):
            latest[v.sender] = v
    out: dict[str, tuple[str, ...]] = {}
    for sender, v in latest.items():
        sel = counted(spec, v.selections)
        if sel:
            out[sender] = sel
    return out


def counts(spec: PollSpec, result: Mapping[str, tuple[str, ...]]) -> dict[str, int]:
    """Votes per answer id, every answer listed (zero included)."""
    out = dict.fromkeys(sorted(spec.answer_ids), 0)
    for sel in result.values():
        for s in sel:
            out[s] += 1
    return out
