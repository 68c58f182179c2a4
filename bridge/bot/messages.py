"""The content of what the bot sends (notices, polls) and the parts of what it reads that need unwrapping."""

from __future__ import annotations

from typing import Any

from bridge.events.model import Announce, Text

POLL_START = "m.poll.start"
POLL_RESPONSE_TYPES = ("m.poll.response", "org.matrix.msc3381.poll.response")
POLL_END = "m.poll.end"


def notice(text: Text) -> dict[str, Any]:
    """An ``m.notice`` (bots answer with notices, so other bots do not answer them back)."""
    return {
        "msgtype": "m.notice",
        "body": text.body,
        "format": "org.matrix.custom.html",
        "formatted_body": text.html,
    }


def poll_content(a: Announce) -> dict[str, Any]:
    """``m.poll.start`` as in Matrix 1.7, plus the MSC3381 shape that matrix-js-sdk (Element) still reads."""
    return {
        "org.matrix.msc3381.poll.start": {
            "kind": "org.matrix.msc3381.poll.disclosed",
            "max_selections": 1,
            "question": {"org.matrix.msc1767.text": a.question, "body": a.question},
            "answers": [{"id": ans.value, "org.matrix.msc1767.text": label} for ans, label in a.answers],
        },
        "org.matrix.msc1767.text": a.text.body,
        "m.poll": {
            "kind": "m.disclosed",
            "max_selections": 1,
            "question": {"m.text": [{"body": a.question}]},
            "answers": [{"m.id": ans.value, "m.text": [{"body": label}]} for ans, label in a.answers],
        },
        "m.text": [
            {"mimetype": "text/html", "body": a.text.html},
            {"body": a.text.body},
        ],
    }


def poll_end_content(poll_event: str, text: str) -> dict[str, Any]:
    """``m.poll.end`` closing the poll ``poll_event``."""
    return {
        "m.relates_to": {"rel_type": "m.reference", "event_id": poll_event},
        "m.text": [{"body": text}],
    }


def strip_reply_fallback(body: str) -> str:
    """Drop the quoted "> <@user> ..." block clients put before a reply, so a command in a reply parses."""
    lines = body.split("\n")
    if not lines or not lines[0].startswith("> "):
        return body
    i = 0
    while i < len(lines) and lines[i].startswith(">"):
        i += 1
    return "\n".join(lines[i:]).strip()


def poll_selections(content: dict[str, Any]) -> tuple[str, list[str]] | None:
    """The poll a response answers and the chosen answer ids, in either the stable or the MSC3381 shape."""
    target = content.get("m.relates_to", {}).get("event_id")
    selections = content.get("m.selections")
    if selections is None:
        selections = content.get("org.matrix.msc3381.poll.response", {}).get("answers", [])
    if isinstance(target, str) and isinstance(selections, list):
        return target, [str(s) for s in selections]
    return None
