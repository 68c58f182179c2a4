"""Attendance CSV and an iCalendar (RFC 5545) file for one event; pure, bytes out."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from bridge.events.model import Checkin, Event, Invitee, Lang, Rsvp, attendance
from bridge.events.render import ANSWER_LABELS, person_name

CSV_HEADER: dict[Lang, tuple[str, ...]] = {
    "ru": ("ФИО", "Должность", "Подразделение", "Телефон", "Ответ", "Статус", "Время ответа", "Matrix ID",
           "Приглашение", "Присутствие"),
    "en": ("Name", "Title", "Department", "Phone", "Answer", "Status", "Answered at", "Matrix ID",
           "Invitation", "Attendance"),
}  # fmt: skip
INVITATION_LABELS: dict[Lang, dict[bool, str]] = {
    "ru": {True: "обязательно", False: "по желанию"},
    "en": {True: "required", False: "optional"},
}
# invitees Rule 5: a registered person who did not check in is a no-show; anyone checked in attended.
PRESENCE_LABELS: dict[Lang, dict[str, str]] = {
    "ru": {"attended": "пришёл", "no_show": "не пришёл"},
    "en": {"attended": "attended", "no_show": "no-show"},
}
NO_ANSWER: dict[Lang, str] = {"ru": "нет ответа", "en": "no answer"}
STATUS_LABELS: dict[Lang, dict[str, str]] = {
    "ru": {"confirmed": "идёт", "waitlisted": "лист ожидания", "maybe": "возможно", "not_going": "не идёт"},
    "en": {"confirmed": "going", "waitlisted": "waitlist", "maybe": "maybe", "not_going": "not going"},
}


def attendance_csv(
    event: Event,
    answers: Sequence[Rsvp],
    tz: ZoneInfo,
    invitees: Sequence[Invitee] = (),
    checkins: Sequence[Checkin] = (),
) -> bytes:
    """One row per person who answered, confirmed first, then waitlist, maybe, not going; then the invitees
    without an answer ("нет ответа"), then people who checked in without answering.

    The last two columns: whether the person was invited (required or optional) and, once anyone checked in,
    whether they attended or, registered as going, did not come.

    What a person reads in the directory: name, job title, the department's path as in space names, phone,
    then the answer, the status it gives (a "going" may be on the waitlist) and when it was given, in the
    organisation's zone as "2026-12-01 15:04" (Excel reads that as a date). Column names are in the event's
    language. UTF-8 with a BOM because Excel, which most of the staff open it in, otherwise shows Cyrillic
    as mojibake.
    """
    att = attendance(event.capacity, answers)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_HEADER[event.lang])
    labels = ANSWER_LABELS[event.lang]
    status_labels = STATUS_LABELS[event.lang]
    invited = {i.user_id: INVITATION_LABELS[event.lang][i.required] for i in invitees}
    came = {c.user_id for c in checkins}
    presence = PRESENCE_LABELS[event.lang]

    def present(user: str, registered: bool) -> str:
        if user in came:
            return presence["attended"]
        return presence["no_show"] if registered and (came or event.checkin_closed) else ""

    groups = (
        ("confirmed", att.confirmed),
        ("waitlisted", att.waitlist),
        ("maybe", att.maybe),
        ("not_going", att.not_going),
    )
    for status, rows in groups:
        for r in rows:
            w.writerow(
                (
                    _cell(r.display_name or r.user_id[1:].split(":")[0]),
                    _cell(r.job_title),
                    _cell(r.department),
                    _cell(r.phone),
                    labels[r.answer],
                    status_labels[status],
                    r.answered_at.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
                    r.user_id,
                    invited.get(r.user_id, ""),
                    present(r.user_id, status == "confirmed"),
                )
            )
    answered = {r.user_id for r in answers}
    for i in invitees:
        if i.user_id not in answered:
            w.writerow((_cell(person_name(i.user_id, i.display_name)), "", "", "", "", NO_ANSWER[event.lang],
                        "", i.user_id, invited[i.user_id], present(i.user_id, False)))  # fmt: skip
    listed = answered | set(invited)
    for c in checkins:
        if c.user_id not in listed:
            w.writerow((_cell(person_name(c.user_id, c.display_name)), "", "", "", "", "", "", c.user_id, "",
                        presence["attended"]))  # fmt: skip
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def _cell(s: str) -> str:
    # A cell starting with = + - @ is run as a formula by spreadsheets (CSV injection); a quote disarms it.
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


def ics_escape(s: str) -> str:
    """TEXT value escaping of RFC 5545 §3.3.11."""
    return (
        s.replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
    )


def fold(line: str) -> str:
    """Fold a content line at 75 octets (RFC 5545 §3.1) without splitting a UTF-8 character."""
    out: list[str] = []
    cur = ""
    size = 0
    limit = 75
    for ch in line:
        n = len(ch.encode("utf-8"))
        if size + n > limit:
            out.append(cur)
            cur, size, limit = " ", 1, 75
        cur += ch
        size += n
    out.append(cur)
    return "\r\n".join(out)


def _utc(dt: datetime) -> str:
    return dt.astimezone(ZoneInfo("UTC")).strftime("%Y%m%dT%H%M%SZ")


def uid(event: Event, domain: str) -> str:
    """Stable across exports and edits, so a calendar updates the entry instead of adding a second one."""
    return f"{event.id}-{int(event.created_at.timestamp())}@{domain}"


def event_ics(event: Event, now: datetime, domain: str) -> bytes:
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//civmatrix//event bot//RU",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        "BEGIN:VEVENT",
        f"UID:{uid(event, domain)}",
        f"DTSTAMP:{_utc(now)}",
        f"DTSTART:{_utc(event.starts_at)}",
        f"DTEND:{_utc(event.ends_at)}",
        f"SEQUENCE:{event.sequence}",
        f"SUMMARY:{ics_escape(event.title)}",
        "STATUS:" + ("CANCELLED" if event.cancelled else "CONFIRMED"),
    ]
    if event.place:
        lines.append(f"LOCATION:{ics_escape(event.place)}")
    lines.append(f"DESCRIPTION:{ics_escape(f'{event.title} ({event.id}), {event.organiser}')}")
    lines += ["END:VEVENT", "END:VCALENDAR"]
    return ("\r\n".join(fold(x) for x in lines) + "\r\n").encode("utf-8")
