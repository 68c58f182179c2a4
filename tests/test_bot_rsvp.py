"""RSVP transitions and the waitlist: examples plus hypothesis invariants over random answer sequences."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.events.model import (
    Answer,
    Event,
    EventID,
    RoomID,
    Rsvp,
    Source,
    UserID,
    attendance,
)
from bridge.events.rsvp import Accepted, Refused, RsvpRequest, Withdrawn, decide, withdraw

T0 = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)


def event(capacity: int | None = 2, **kw: object) -> Event:
    base: dict[str, object] = dict(
        id=EventID("ab3cd"), title="T", starts_at=T0 + timedelta(days=3), place=None, capacity=capacity,
        deadline=T0 + timedelta(days=2), organiser=UserID("@org:x"), origin_room=RoomID("!r:x"),
        audience_unit=None, private=False, lang="en", created_at=T0,
    )  # fmt: skip
    base.update(kw)
    return Event(**base)  # type: ignore[arg-type]


def answer(
    ev: Event, answers: list[Rsvp], user: str, a: Answer, at: datetime
) -> tuple[list[Rsvp], Accepted | Refused]:
    seq = max((r.seq for r in answers), default=0) + 1
    out = decide(ev, answers, RsvpRequest(UserID(user), a, Source.COMMAND, None, None), at, seq)
    if isinstance(out, Accepted) and not out.unchanged:
        answers = [r for r in answers if r.user_id != user] + [out.rsvp]
    return answers, out


def test_waitlist_and_promotion() -> None:
    ev = event(capacity=2)
    s: list[Rsvp] = []
    s, a = answer(ev, s, "@a:x", Answer.GOING, T0)
    assert isinstance(a, Accepted) and a.status == "confirmed"
    s, _ = answer(ev, s, "@b:x", Answer.GOING, T0 + timedelta(seconds=1))
    s, c = answer(ev, s, "@c:x", Answer.GOING, T0 + timedelta(seconds=2))
    s, d = answer(ev, s, "@d:x", Answer.GOING, T0 + timedelta(seconds=3))
    assert isinstance(c, Accepted) and (c.status, c.waitlist_position) == ("waitlisted", 1)
    assert isinstance(d, Accepted) and (d.status, d.waitlist_position) == ("waitlisted", 2)
    s, out = answer(ev, s, "@a:x", Answer.NOT_GOING, T0 + timedelta(seconds=4))
    assert isinstance(out, Accepted)
    assert [p.user_id for p in out.promoted] == ["@c:x"]  # the first on the waitlist, not the last
    assert [r.user_id for r in out.after.confirmed] == ["@b:x", "@c:x"]
    assert [r.user_id for r in out.after.waitlist] == ["@d:x"]


def test_same_answer_keeps_place_in_queue() -> None:
    ev = event(capacity=1)
    s: list[Rsvp] = []
    s, _ = answer(ev, s, "@a:x", Answer.GOING, T0)
    s, _ = answer(ev, s, "@b:x", Answer.GOING, T0 + timedelta(seconds=1))
    s, again = answer(ev, s, "@a:x", Answer.GOING, T0 + timedelta(seconds=5))
    assert isinstance(again, Accepted) and again.unchanged and again.status == "confirmed"
    assert attendance(1, s).confirmed[0].user_id == "@a:x"


def test_changing_mind_replaces() -> None:
    ev = event(capacity=None)
    s: list[Rsvp] = []
    s, _ = answer(ev, s, "@a:x", Answer.GOING, T0)
    s, out = answer(ev, s, "@a:x", Answer.MAYBE, T0 + timedelta(seconds=1))
    assert isinstance(out, Accepted) and out.previous is not None and out.previous.answer is Answer.GOING
    assert len(s) == 1 and s[0].answer is Answer.MAYBE


def test_refusals() -> None:
    s: list[Rsvp] = []
    _, out = answer(event(), s, "@a:x", Answer.GOING, T0 + timedelta(days=2))  # exactly at the deadline
    assert out == Refused("deadline")
    _, out = answer(event(cancelled=True), s, "@a:x", Answer.GOING, T0)
    assert out == Refused("cancelled")
    _, out = answer(event(deadline=None), s, "@a:x", Answer.GOING, T0 + timedelta(days=3))
    assert out == Refused("started")


ops = st.lists(
    st.tuples(st.integers(0, 7), st.sampled_from(list(Answer)), st.integers(0, 3)), min_size=1, max_size=60
)


@settings(max_examples=300, deadline=None)
@given(capacity=st.one_of(st.none(), st.integers(1, 5)), script=ops)
def test_invariants(capacity: int | None, script: list[tuple[int, Answer, int]]) -> None:
    ev = event(capacity=capacity, deadline=None, starts_at=T0 + timedelta(days=30))
    s: list[Rsvp] = []
    now = T0
    for user_no, a, dt in script:
        now += timedelta(seconds=dt)  # equal timestamps happen: seq breaks the tie
        before = attendance(capacity, s)
        s, out = answer(ev, s, f"@u{user_no}:x", a, now)
        assert isinstance(out, Accepted)
        after = attendance(capacity, s)
        # One answer per person.
        assert len({r.user_id for r in s}) == len(s)
        # Never more confirmed than the capacity, and nobody waits while a place is free.
        if capacity is not None:
            assert len(after.confirmed) <= capacity
            assert not after.waitlist or len(after.confirmed) == capacity
        # The waitlist is in answer-time order.
        keys = [(r.answered_at, r.seq) for r in after.waitlist]
        assert keys == sorted(keys)
        # Confirmed people never lose their place to someone answering later.
        going_after = {r.user_id for r in after.confirmed}
        for r in before.confirmed:
            if r.user_id != f"@u{user_no}:x":
                assert r.user_id in going_after
        # Promotion is exactly "confirmed now, not before", and it is always the head of the old waitlist.
        promoted = [r.user_id for r in out.promoted]
        assert promoted == [r.user_id for r in before.waitlist if r.user_id in going_after][: len(promoted)]
        assert set(promoted) == going_after - {r.user_id for r in before.confirmed} - {f"@u{user_no}:x"}


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 4),
    script=st.lists(st.tuples(st.integers(0, 6), st.sampled_from([*Answer, None])), min_size=1, max_size=50),
)
def test_invariants_with_withdrawals(capacity: int, script: list[tuple[int, Answer | None]]) -> None:
    """Answers mixed with withdrawals (removed reactions): capacity, order and promotion still hold."""
    ev = event(capacity=capacity, deadline=None, starts_at=T0 + timedelta(days=30))
    s: list[Rsvp] = []
    now = T0
    for user_no, a in script:
        now += timedelta(seconds=1)
        user = f"@u{user_no}:x"
        before = attendance(capacity, s)
        if a is None:
            out = withdraw(ev, s, UserID(user), now)
            if out is None:
                assert user not in {r.user_id for r in s}
                continue
            assert isinstance(out, Withdrawn)
            s = [r for r in s if r.user_id != user]
            promoted = [r.user_id for r in out.promoted]
        else:
            s, res = answer(ev, s, user, a, now)
            assert isinstance(res, Accepted)
            promoted = [r.user_id for r in res.promoted]
        after = attendance(capacity, s)
        assert len(after.confirmed) <= capacity
        assert not after.waitlist or len(after.confirmed) == capacity
        assert promoted == [r.user_id for r in before.waitlist][: len(promoted)]
        assert set(promoted) == {r.user_id for r in after.confirmed} - {
            r.user_id for r in before.confirmed
        } - {user}
