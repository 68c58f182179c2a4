"""The Synapse modules for the space tree (presence, space browsing): their pure parts, and that every
rendered Synapse config loads them.

Its live behaviour (two people who share only spaces do not see each other's presence) is in
tests/test_space_tree_live.py, on the production topology in tests/test_topology.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.matrix.contract import MARKER_TYPE
from provisioner import deploy
from provisioner.synapse.config import PRESENCE_MODULE, SPACE_BROWSING_MODULE, render_homeserver_config
from provisioner.synapse.limits import SpaceBrowsing
from provisioner.synapse.presence import PresenceScope, managed_spaces
from tests.test_deploy import example_deployment


def _marker(kind: object) -> str:
    return json.dumps({"type": MARKER_TYPE, "state_key": "", "content": {"kind": kind, "unit": "ou:x"}})


def test_only_markers_of_kind_space_or_announcements_are_kept_out() -> None:
    rows = [
        ("!top:x", _marker("space")),
        ("!unit:x", _marker("space").encode()),  # PostgreSQL hands JSON back as text, SQLite may as bytes
        ("!news:x", _marker("announcements")),
        ("!room:x", _marker("room")),
        ("!group:x", _marker("group")),
        ("!odd:x", _marker(None)),
        ("!broken:x", "{not json"),
        ("!list:x", "[]"),
        ("!nocontent:x", json.dumps({"type": MARKER_TYPE})),
    ]
    assert managed_spaces(rows) == {"!top:x", "!unit:x", "!news:x"}


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"interval_seconds": 0}, "between 0.5 and 3600"),
        ({"interval_seconds": "10"}, "between 0.5 and 3600"),
        ({"interval_seconds": True}, "between 0.5 and 3600"),
        ({"interval": 10}, "unknown config keys ['interval']"),
    ],
)
def test_bad_module_config_is_named(config: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        PresenceScope.parse_config(config)


def test_good_module_config_passes() -> None:
    assert PresenceScope.parse_config(None) == {}
    assert PresenceScope.parse_config({"interval_seconds": 2.5}) == {"interval_seconds": 2.5}


def _modules(config: dict[str, object]) -> list[str]:
    return [m["module"] for m in config.get("modules", [])]  # type: ignore[union-attr,index]


def test_every_rendered_config_loads_the_presence_module(tmp_path: Path) -> None:
    # The embedded Synapse of the demo and the tests, and the shared homeserver.yaml of the topology,
    # docker-compose and systemd (deploy/synapse/homeserver.yaml is this renderer's output).
    one = render_homeserver_config(server_name="x.test", data_dir=tmp_path, public_port=1, admin_port=2)
    shared = deploy.homeserver_config(example_deployment())
    committed = (Path(__file__).parents[1] / "deploy" / "synapse" / "homeserver.yaml").read_text()
    for module in (PRESENCE_MODULE, SPACE_BROWSING_MODULE):
        assert _modules(one).count(module) == 1
        assert _modules(shared).count(module) == 1
        assert f"module: {module}" in committed
    # Listed once even when a caller lists it too (with its own interval).
    mine = {"module": PRESENCE_MODULE, "config": {"interval_seconds": 2}}
    twice = render_homeserver_config(
        server_name="x.test", data_dir=tmp_path, public_port=1, admin_port=2, modules=[mine]
    )
    assert [m for m in twice["modules"] if m["module"] == PRESENCE_MODULE] == [mine]


def test_stock_synapse_renders_without_it(tmp_path: Path) -> None:
    # A stock image cannot import civmatrix; a bench's stock side asks for it explicitly.
    stock = render_homeserver_config(
        server_name="x.test", data_dir=tmp_path, public_port=1, admin_port=2, refuse_admin_on_public=False
    )
    assert not {PRESENCE_MODULE, SPACE_BROWSING_MODULE} & set(_modules(stock))
    bench = render_homeserver_config(
        server_name="x.test", data_dir=tmp_path, public_port=1, admin_port=2, presence_scope=False,
        space_browsing=False,
    )  # fmt: skip
    assert not {PRESENCE_MODULE, SPACE_BROWSING_MODULE} & set(_modules(bench))


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"per_second": 0}, "per_second is 0"),
        ({"burst_count": "many"}, "burst_count is 'many'"),
        ({"rate": 5}, "unknown config keys"),
    ],
)
def test_bad_space_browsing_config_is_named(config: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        SpaceBrowsing.parse_config(config)
    assert SpaceBrowsing.parse_config({"per_second": 50, "burst_count": 500}) == {
        "per_second": 50,
        "burst_count": 500,
    }
