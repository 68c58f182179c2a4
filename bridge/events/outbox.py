"""Effects as JSON, so they can wait in the store's outbox across a crash.

The outbox is written in the same transaction as the state change that produced the effects; the transport
sends each one with its outbox id as the Matrix transaction id and deletes it afterwards. A crash in between
re-sends with the same transaction id, which the homeserver deduplicates: replies, polls and reminders go out
once even when the bot is killed at the worst moment.
"""

from __future__ import annotations

import base64
import json
from typing import Any, assert_never

from bridge.events.model import (
    Announce,
    Answer,
    Attachment,
    DirectMessage,
    DirectUpload,
    Effect,
    EndPoll,
    EventID,
    Invitation,
    MatrixEventID,
    Reply,
    RoomID,
    RoomNotice,
    Text,
    UpdateTally,
    Upload,
    UserID,
)


def _text(t: Text) -> dict[str, str]:
    return {"body": t.body, "html": t.html}


def _files(fs: tuple[Attachment, ...]) -> list[dict[str, str]]:
    return [{"name": f.filename, "mime": f.mimetype, "data": base64.b64encode(f.data).decode()} for f in fs]


def encode(effect: Effect) -> str:
    d: dict[str, Any]
    match effect:
        case Reply(room, reply_to, text):
            d = {"t": "reply", "room": room, "reply_to": reply_to, "text": _text(text)}
        case RoomNotice(room, text):
            d = {"t": "notice", "room": room, "text": _text(text)}
        case DirectMessage(user, text, answer):
            d = {"t": "dm", "user": user, "text": _text(text)} | ({"answer": True} if answer else {})
        case Announce(eid, room, text, question, answers):
            d = {"t": "announce", "event": eid, "room": room, "text": _text(text), "question": question,
                 "answers": [[a.value, label] for a, label in answers]}  # fmt: skip
        case Upload(room, files):
            d = {"t": "upload", "room": room, "files": _files(files)}
        case DirectUpload(user, text, files):
            d = {"t": "dm_upload", "user": user, "text": _text(text), "files": _files(files)}
        case EndPoll(eid, room, body, poll):
            d = {"t": "end_poll", "event": eid, "room": room, "body": body} | ({"poll": poll} if poll else {})
        case UpdateTally(eid, room):
            d = {"t": "tally", "event": eid, "room": room}
        case Invitation(eid, user, text):
            d = {"t": "invitation", "event": eid, "user": user, "text": _text(text)}
        case _:
            assert_never(effect)
    return json.dumps(d, ensure_ascii=False, sort_keys=True)


def decode(payload: str) -> Effect:
    d = json.loads(payload)

    def text(x: dict[str, str]) -> Text:
        return Text(x["body"], x["html"])

    def files(xs: list[dict[str, str]]) -> tuple[Attachment, ...]:
        return tuple(Attachment(x["name"], x["mime"], base64.b64decode(x["data"])) for x in xs)

    match d["t"]:
        case "reply":
            rt = d["reply_to"]
            return Reply(RoomID(d["room"]), None if rt is None else MatrixEventID(rt), text(d["text"]))
        case "notice":
            return RoomNotice(RoomID(d["room"]), text(d["text"]))
        case "dm":
            return DirectMessage(UserID(d["user"]), text(d["text"]), bool(d.get("answer", False)))
        case "announce":
            answers = tuple((Answer(a), str(label)) for a, label in d["answers"])
            return Announce(EventID(d["event"]), RoomID(d["room"]), text(d["text"]), d["question"], answers)
        case "upload":
            return Upload(RoomID(d["room"]), files(d["files"]))
        case "dm_upload":
            return DirectUpload(UserID(d["user"]), text(d["text"]), files(d["files"]))
        case "end_poll":
            poll = d.get("poll")
            return EndPoll(
                EventID(d["event"]),
                RoomID(d["room"]),
                d["body"],
                None if poll is None else MatrixEventID(poll),
            )
        case "tally":
            return UpdateTally(EventID(d["event"]), RoomID(d["room"]))
        case "invitation":
            return Invitation(EventID(d["event"]), UserID(d["user"]), text(d["text"]))
    raise ValueError(f"unknown effect kind {d['t']!r}")
