"""``sync --plan FILE`` against a real slapd and Synapse: the saved file is what is checked and applied."""

from __future__ import annotations

import asyncio
import json

import pytest

from provisioner import exitcodes
from provisioner.config import load_config
from provisioner.core.directory import interpret
from provisioner.ldap_reader import read_directory_sync
from tests import test_sync_live
from tests.test_sync_live import cli, observed, sync

world = test_sync_live.world  # the fixture: a fresh slapd (60 people) and a fresh Synapse

pytestmark = [pytest.mark.slapd, pytest.mark.synapse]


def test_edited_saved_plan_with_added_locks_and_kicks_is_refused(world, tmp_path):
    ldap, hs, path, directory = world
    assert sync(path).exit_code == exitcodes.OK
    plan_file = tmp_path / "plan.json"
    made = cli(path, "plan", "--out", str(plan_file))
    assert made.returncode == exitcodes.OK, made.stderr
    data = json.loads(plan_file.read_text())
    assert data["actions"] == []  # converged: nothing to do
    cfg = load_config(path, token_required=True)
    obs = asyncio.run(observed(cfg))
    room = next(r for r in obs.rooms.values() if r.kind == "room" and len(r.members) > 3)
    victims = sorted(m for m in room.members if m.startswith("@") and "admin" not in m)[:2]
    data["actions"] += [{"kind": "lock_user", "user_id": victims[0], "cause": "edited in"}]
    data["actions"] += [
        {
            "kind": "kick",
            "room_key": room.key,
            "room_kind": "room",
            "user_id": victims[1],
            "cause": "edited in",
        }
    ]
    plan_file.write_text(json.dumps(data))
    refused = cli(path, "sync", "--plan", str(plan_file), "--quiet")
    assert refused.returncode == exitcodes.STALE_PLAN, refused.stderr
    assert "edited after it was made" in refused.stderr
    # The same edit with a recomputed digest is still refused: the actions differ from the fresh plan's.
    from provisioner.core.actions import Plan

    forged = Plan.from_json(json.dumps(data))
    plan_file.write_text(forged.to_json())
    refused = cli(path, "sync", "--plan", str(plan_file), "--quiet")
    assert refused.returncode == exitcodes.STALE_PLAN, refused.stderr
    assert "actions differ" in refused.stderr
    after = asyncio.run(observed(cfg))
    assert not any(u.locked for u in after.users.values())
    assert set(victims) <= after.rooms[room.key].members


def test_saved_plan_over_the_threshold_is_refused(world, tmp_path):
    ldap, hs, path, directory = world
    assert sync(path).exit_code == exitcodes.OK
    cfg = load_config(path, token_required=True)
    snap = interpret(read_directory_sync(cfg.directory), cfg.directory)
    victims = sorted(snap.enabled, key=lambda p: p.dn)[:5]  # 5 of ~60 is over 5 %
    ldap.modify("".join(f"dn: {p.dn}\nchangetype: delete\n\n" for p in victims))
    plan_file = tmp_path / "plan.json"
    made = cli(path, "plan", "--allow-removals", "5", "--out", str(plan_file))
    assert made.returncode == exitcodes.OK, made.stderr
    assert sum(a["kind"] == "lock_user" for a in json.loads(plan_file.read_text())["actions"]) == 5
    held = cli(path, "sync", "--plan", str(plan_file), "--quiet")
    assert held.returncode == exitcodes.REMOVALS_HELD, held.stderr
    assert "would remove 5 people" in held.stderr
    assert not any(u.locked for u in asyncio.run(observed(cfg)).users.values())
    applied = cli(path, "sync", "--plan", str(plan_file), "--quiet", "--allow-removals", "5")
    assert applied.returncode == exitcodes.OK, applied.stderr
    assert sum(u.locked for u in asyncio.run(observed(cfg)).users.values()) == 5
