"""The search index (pure): matching rules, ranking, limits; the snapshot file; the search: config section."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.search.config import SearchConfigError, parse_search
from bridge.search.index import SearchIndex, result_label
from bridge.search.snapshot import IndexedPerson, SnapshotError, read_snapshot, write_snapshot

IVANOV = IndexedPerson(
    "@ivanov.ii:x", "Иванов Иван Иванович", "ivanov.ii", title="Начальник отдела",
    department=("Префектура ЮАО", "Отдел ЖКХ"), email="ivanov.ii@mos.ru", phone="+7 (495) 123-45-67",
)  # fmt: skip
IVANOVA = IndexedPerson(
    "@ivanova.ms:x", "Иванова Мария Сергеевна", "ivanova.ms", title="Главный специалист",
    department=("Префектура ЮАО", "Отдел ЖКХ"), email="ivanova.ms@mos.ru", phone="+7 495 765-43-21",
)  # fmt: skip
FEDOROV = IndexedPerson(
    "@fedorov.pa:x", "Фёдоров Пётр Алексеевич", "fedorov.pa", title="Специалист",
    department=("ГБУ МФЦ города Москвы", "Единый контакт-центр"), email="fedorov.pa@mos.ru", phone="8 499 000-12-34",
)  # fmt: skip
IVANCHENKO = IndexedPerson(
    "@ivanchenko:x", "Иванченко Ольга", "ivanchenko", title="Иванов день: организатор", department=("Управа",)
)
INDEX = SearchIndex([FEDOROV, IVANOVA, IVANOV, IVANCHENKO])


def found(term: str, limit: int = 10) -> list[str]:
    return [h.user_id for h in INDEX.search(term, limit).hits]


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("иванов", ["@ivanov.ii:x", "@ivanova.ms:x", "@ivanchenko:x"]),  # name matches before the title one
        ("ИВАНОВ", ["@ivanov.ii:x", "@ivanova.ms:x", "@ivanchenko:x"]),
        ("ivanov", ["@ivanov.ii:x", "@ivanova.ms:x", "@ivanchenko:x"]),  # Latin for Cyrillic
        ("федоров", ["@fedorov.pa:x"]),  # ё typed as е
        ("Фёдоров", ["@fedorov.pa:x"]),
        ("федоров пётр", ["@fedorov.pa:x"]),
        ("пётр федоров", ["@fedorov.pa:x"]),  # word order does not count
        ("петр", ["@fedorov.pa:x"]),
        ("petr", ["@fedorov.pa:x"]),
        ("алексеевич", ["@fedorov.pa:x"]),  # patronymic
        ("fedorov.pa", ["@fedorov.pa:x"]),  # login
        ("начальник", ["@ivanov.ii:x"]),  # title word
        ("специалист", ["@ivanova.ms:x", "@fedorov.pa:x"]),  # both titles, in name order (И before Ф)
        ("отдел жкх", ["@ivanov.ii:x", "@ivanova.ms:x"]),  # department, two words
        ("жкх", ["@ivanov.ii:x", "@ivanova.ms:x"]),
        ("префектура", ["@ivanov.ii:x", "@ivanova.ms:x"]),  # an upper level of the path
        ("контакт-центр", ["@fedorov.pa:x"]),
        ("мфц", ["@fedorov.pa:x"]),
        ("жкх начальник", ["@ivanov.ii:x"]),  # every word must match
        ("жкх директор", []),
        ("ivanova.ms@mos", ["@ivanova.ms:x"]),  # e-mail prefix
        ("ivanova.ms@mos.ru", ["@ivanova.ms:x"]),
        ("4567", ["@ivanov.ii:x"]),  # phone suffix
        ("123-45-67", ["@ivanov.ii:x"]),
        ("+7 (495) 123-45-67", ["@ivanov.ii:x"]),  # typed as written
        ("8 495 123 45 67", ["@ivanov.ii:x"]),  # 8 for +7
        ("74951234567", ["@ivanov.ii:x"]),
        ("4991", []),  # inside the number, not a suffix
        ("567", []),  # under 4 digits: no phone match
        ("", []),
        ("   ", []),
        ("!!!", []),
    ],
)
def test_matching(term: str, expected: list[str]) -> None:
    assert found(term) == expected


# Phones as directories print them (several numbers, extensions in Russian and English) and people type them.
DESK = IndexedPerson("@desk:x", "Абрамов Олег", "desk", phone="+7 (495) 149-03-75 ext. 25139")
SAME_MAIN = IndexedPerson("@samemain:x", "Борисова Анна", "samemain", phone="8 (495) 149-03-75 доб. 25140")
RUSSIAN_EXT = IndexedPerson("@volkov:x", "Волков Ян", "volkov", phone="+7 495 540-02-01, доб. 318")
TWO = IndexedPerson("@two:x", "Глебов Ион", "two", phone="+7 499 222-33-44; +7 916 555-66-77 вн. 4512")
HASH = IndexedPerson("@hash:x", "Дронов Лев", "hash", phone="8-800-100-20-30 #7")
PHONES = SearchIndex([DESK, SAME_MAIN, RUSSIAN_EXT, TWO, HASH, IVANOV, FEDOROV])


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("+7 (495) 149-03-75 ext. 25139", ["@desk:x"]),  # as printed: the extension picks one of two
        ("8 495 149-03-75 доб. 25139", ["@desk:x"]),  # 8 for +7, доб. for ext.
        ("+7 (495) 149-03-75 x25139", ["@desk:x"]),
        ("4951490375 #25140", ["@samemain:x"]),
        ("+7 (495) 149-03-75", ["@desk:x", "@samemain:x"]),  # the main number: everyone behind it
        ("8 495 149 03 75", ["@desk:x", "@samemain:x"]),
        ("149-03-75", ["@desk:x", "@samemain:x"]),
        ("0375", ["@desk:x", "@samemain:x"]),  # the last 4 digits of the main number
        ("25139", ["@desk:x"]),  # the extension alone
        ("5139", ["@desk:x"]),  # its last 4 digits
        ("доб. 25139", ["@desk:x"]),
        ("ext 25140", ["@samemain:x"]),
        ("540-02-01", ["@volkov:x"]),  # the main number of "…, доб. 318"
        ("+7 495 540-02-01 доб. 318", ["@volkov:x"]),
        ("доб 318", ["@volkov:x"]),  # marked: exact, even under 4 digits
        ("318", []),  # bare and under 4 digits: no phone match
        ("вн. 31", []),  # an extension typed with its marker is matched whole, not as a suffix
        ("222-33-44", ["@two:x"]),  # the first of two numbers in one value
        ("8 916 555-66-77", ["@two:x"]),  # the second
        ("+7 916 555-66-77 вн. 4512", ["@two:x"]),
        ("4512", ["@two:x"]),
        ("+7 499 222-33-44 вн. 4512", []),  # the extension belongs to the other number
        ("#7", ["@hash:x"]),
        ("8 800 100 20 30", ["@hash:x"]),
        ("+7 495 149-03-75 доб. 99999", []),  # a wrong extension finds nobody
        ("глебов 6677", ["@two:x"]),  # a name and a phone: both must match
        ("глебов 0375", []),
        ("1490", []),  # digits inside a number are no suffix
        ("0201 доб 318", ["@volkov:x"]),
        ("ext", []),  # a marker alone is a word like any other
        ("доб", []),
    ],
)
def test_phone_matching(term: str, expected: list[str]) -> None:
    assert [h.user_id for h in PHONES.search(term).hits] == expected


def test_a_marker_alone_still_prefix_matches_names() -> None:
    dobrov = IndexedPerson("@dobrov:x", "Добров Ян", "dobrov", phone="+7 495 000-00-01 доб. 12")
    ix = SearchIndex([dobrov, DESK])
    assert [h.user_id for h in ix.search("доб").hits] == ["@dobrov:x"]
    assert [h.user_id for h in ix.search("доб 12").hits] == ["@dobrov:x"]  # the extension, not the name


def test_short_digits_do_not_flood() -> None:
    many = [
        IndexedPerson(f"@p{i}:x", "Петров Пётр", f"p{i}", phone=f"+7 495 {i:03d}-12-34") for i in range(300)
    ]
    ix = SearchIndex(many)
    assert ix.search("234", 50).hits == ()  # three digits: no phone match at all
    assert ix.search("1234", 50).limited  # four: the suffix everyone shares, limited as ever
    assert [h.user_id for h in ix.search("007-12-34").hits] == ["@p7:x"]


def test_exact_full_name_comes_first_even_against_name_order() -> None:
    a = IndexedPerson("@a:x", "Иванов Иван", "a", sort_name="0")
    b = IndexedPerson("@b:x", "Иванов Иван Петрович", "b", sort_name="1")
    c = IndexedPerson("@c:x", "Иванов Иванко", "c", sort_name="2")
    ix = SearchIndex([c, b, a])
    assert [h.user_id for h in ix.search("иванов иван петрович").hits] == ["@b:x"]
    assert [h.user_id for h in ix.search("Иванов Иванко").hits] == ["@c:x"]
    assert [h.user_id for h in ix.search("иванов иван").hits] == ["@a:x", "@b:x", "@c:x"]


def test_limit_is_clamped_and_limited_says_whether_more_exist() -> None:
    people = [
        IndexedPerson(f"@p{i:03d}:x", f"Петров Пётр {i}", f"p{i:03d}", title="Специалист") for i in range(80)
    ]
    ix = SearchIndex(people)
    assert len(ix.search("петров").hits) == 10 and ix.search("петров").limited
    assert len(ix.search("петров", 500).hits) == 50
    assert ix.search("петров", 0).hits == () and ix.search("петров", 0).limited
    assert ix.search("петров", -5).hits == ()
    assert not ix.search("петров пётр 7", 50).limited  # 7 and 70..79: 11 people


def test_a_person_listed_twice_in_the_snapshot_is_one_result() -> None:
    ix = SearchIndex([IVANOV, IVANOV, IVANOVA])
    assert [h.user_id for h in ix.search("иванов").hits] == ["@ivanov.ii:x", "@ivanova.ms:x"]


words = st.text(alphabet="абвгдеёжзийклмнопрстуфхцчшщыэюяabcdefgio", min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(st.tuples(words, words), min_size=1, max_size=40), query=words, limit=st.integers(0, 60)
)
def test_results_are_unique_bounded_and_every_one_matches(names, query, limit) -> None:
    people = [IndexedPerson(f"@u{i}:x", f"{s} {g}", f"u{i}") for i, (s, g) in enumerate(names)]
    ix = SearchIndex(people)
    result = ix.search(query, limit)
    got = [h.user_id for h in result.hits]
    assert len(got) == len(set(got)) <= min(limit, 50)
    # Against a brute-force reading of the rule: some word (either spelling) starts with the query.
    from bridge.search.index import fold
    from provisioner.core.identity import transliterate

    def matches(p: IndexedPerson) -> bool:
        q = fold(query)
        tokens = [t for w in fold(p.display_name).split() for t in (w, transliterate(w))] + [p.login]
        return any(t.startswith(v) for t in tokens for v in (q, transliterate(q)))

    expected = {p.user_id for p in people if matches(p)}
    assert set(got) <= expected
    assert len(got) == min(len(expected), limit, 50)
    assert result.limited == (len(expected) > min(limit, 50))


def test_result_label_adds_title_and_unit_only_when_asked() -> None:
    assert result_label(IVANOV, context=True) == "Иванов Иван Иванович — Начальник отдела, Отдел ЖКХ"
    assert result_label(IVANOV, context=False) == "Иванов Иван Иванович"
    bare = IndexedPerson("@b:x", "Без Должности", "b")
    assert result_label(bare, context=True) == "Без Должности"


def test_snapshot_round_trip_and_atomic_replace(tmp_path: Path) -> None:
    path = tmp_path / "state" / "search.json"
    write_snapshot(path, [IVANOV, FEDOROV], generated_at=5.0)
    when, people = read_snapshot(path)
    assert when == 5.0 and {p.user_id for p in people} == {IVANOV.user_id, FEDOROV.user_id}
    assert next(p for p in people if p.user_id == IVANOV.user_id) == IVANOV
    # A reader running while the file is rewritten over and over sees a whole snapshot every time. The
    # writer keeps rewriting until the reader has seen both versions, so the reader provably ran during the
    # rewrites (a reader that never got scheduled would otherwise pass in silence).
    big = [IndexedPerson(f"@p{i}:x", f"Петров {i}", f"p{i}") for i in range(3000)]
    stop = threading.Event()
    errors: list[Exception] = []
    sizes: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                _, got = read_snapshot(path)
                sizes.append(len(got))
            except Exception as e:  # pragma: no cover - the assertion below reports it
                errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    writes = 0
    deadline = time.monotonic() + 30
    while (writes < 10 or not {2, 3000} <= set(sizes)) and time.monotonic() < deadline and not errors:
        write_snapshot(path, big if writes % 2 == 0 else [IVANOV, FEDOROV], generated_at=float(writes))
        writes += 1
    stop.set()
    t.join()
    assert not errors
    assert set(sizes) == {2, 3000}, f"the reader saw sizes {sorted(set(sizes))} in {len(sizes)} reads"
    assert [p.name for p in path.parent.iterdir()] == ["search.json"]  # no temp file left behind


def test_damaged_or_missing_snapshot_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="no search snapshot yet"):
        read_snapshot(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 99}))
    with pytest.raises(SnapshotError, match="not a civmatrix search snapshot"):
        read_snapshot(bad)
    bad.write_text("{")
    with pytest.raises(SnapshotError, match="cannot read"):
        read_snapshot(bad)


def test_search_config_defaults_and_errors(tmp_path: Path) -> None:
    cfg_path = str(tmp_path / "civmatrix.yaml")
    raw = {"homeserver": {"url": "http://127.0.0.1:8008/"}, "search": {}}
    cfg = parse_search(raw, cfg_path)
    assert (cfg.host, cfg.port, cfg.homeserver_url) == ("127.0.0.1", 8010, "http://127.0.0.1:8008")
    assert cfg.index == tmp_path / "state" / "search.json" and cfg.show_context
    for section, key in [
        ({"listen": "8010"}, "search.listen"),
        ({"listen": "127.0.0.1:99999"}, "search.listen"),
        ({"index": ""}, "search.index"),
        ({"homeserver": "matrix"}, "search.homeserver"),
        ({"auth_cache_seconds": -1}, "search.auth_cache_seconds"),
        ({"show_context": "yes"}, "search.show_context"),
        ({"lsiten": "127.0.0.1:1"}, "search.lsiten"),
    ]:
        with pytest.raises(SearchConfigError) as e:
            parse_search({**raw, "search": section}, cfg_path)
        assert e.value.key == key and cfg_path in str(e.value)


def test_search_listen_is_loopback_unless_an_address_is_written_explicitly(tmp_path: Path) -> None:
    """The default binds loopback; compose writes 0.0.0.0:8090 (nginx reaches it as synapse:8090)."""
    cfg_path = str(tmp_path / "civmatrix.yaml")
    raw = {"homeserver": {"url": "http://127.0.0.1:8080"}}
    assert parse_search(raw, cfg_path).host == "127.0.0.1"
    for listen, host in [("0.0.0.0:8090", "0.0.0.0"), ("[::1]:8090", "::1"), ("localhost:8090", "localhost")]:
        cfg = parse_search({**raw, "search": {"listen": listen}}, cfg_path)
        assert (cfg.host, cfg.port) == (host, 8090)
    # Only IP addresses (and localhost): a host name could resolve anywhere.
    for listen in ("999.1.1.1:8090", "1.2.3:8090", "synapse:8090", "[zz::1]:8090"):
        with pytest.raises(SearchConfigError) as e:
            parse_search({**raw, "search": {"listen": listen}}, cfg_path)
        assert e.value.key == "search.listen"
