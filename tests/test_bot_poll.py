"""MSC3381 / Matrix 1.7 poll rules as clients apply them: latest vote, unvote, spoiled, redacted, ended."""

from __future__ import annotations

from bridge.events.poll import PollSpec, Vote, counts, parse_response, parse_start, tally

SPEC = PollSpec(frozenset({"going", "maybe", "not_going"}))


def v(eid: str, who: str, ts: int, *sel: str) -> Vote:
    return Vote(eid, who, ts, sel)


def test_both_shapes_are_read() -> None:
    rel = {"rel_type": "m.reference", "event_id": "$poll"}
    stable = {"m.relates_to": rel, "m.selections": ["going"]}
    unstable = {"m.relates_to": rel, "org.matrix.msc3381.poll.response": {"answers": ["maybe"]}}
    assert parse_response("m.poll.response", stable) == ("$poll", ("going",))
    assert parse_response("org.matrix.msc3381.poll.response", unstable) == ("$poll", ("maybe",))
    assert parse_response("m.room.message", stable) is None
    assert parse_response("m.poll.response", {"m.selections": ["going"]}) is None  # no poll named
    start = {"org.matrix.msc3381.poll.start": {"max_selections": 1, "answers": [{"id": "a"}, {"id": "b"}]}}
    assert parse_start(start) == PollSpec(frozenset({"a", "b"}), 1)
    assert parse_start({"m.poll": {"answers": [{"m.id": "x"}], "max_selections": 2}}) == PollSpec(
        frozenset({"x"}), 2
    )


def test_only_the_latest_response_counts() -> None:
    votes = [v("$2", "@a", 200, "not_going"), v("$1", "@a", 100, "going"), v("$3", "@b", 150, "going")]
    assert tally(SPEC, votes) == {"@a": ("not_going",), "@b": ("going",)}
    assert counts(SPEC, tally(SPEC, votes)) == {"going": 1, "maybe": 0, "not_going": 1}
    # Equal timestamps: the event id decides, the same way every time.
    assert tally(SPEC, [v("$b", "@a", 1, "maybe"), v("$a", "@a", 1, "going")]) == {"@a": ("maybe",)}


def test_empty_selection_is_an_unvote_and_unknown_answer_spoils() -> None:
    assert tally(SPEC, [v("$1", "@a", 1, "going"), v("$2", "@a", 2)]) == {}
    assert tally(SPEC, [v("$1", "@a", 1, "going"), v("$2", "@a", 2, "yes-please")]) == {}
    assert tally(SPEC, [v("$1", "@a", 1, "going", "maybe")]) == {"@a": ("going",)}  # max_selections 1


def test_redacted_vote_reverts_to_the_one_before() -> None:
    votes = [v("$1", "@a", 1, "going"), v("$2", "@a", 2, "not_going")]
    assert tally(SPEC, votes, redacted={"$2"}) == {"@a": ("going",)}
    assert tally(SPEC, votes, redacted={"$1", "$2"}) == {}


def test_votes_after_the_end_are_ignored() -> None:
    votes = [v("$1", "@a", 100, "going"), v("$2", "@a", 300, "not_going"), v("$3", "@b", 301, "going")]
    assert tally(SPEC, votes, ended_at=200) == {"@a": ("going",)}
