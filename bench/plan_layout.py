"""Benchmark: interpreting a directory read and planning the layout, for 25,000 and 250,000 people.

    python bench/plan_layout.py --people 25000 250000

The entries come from the sample generator, shaped exactly as the reader hands them over (no LDAP server:
this measures the pure core). Peak memory is tracemalloc's peak during interpretation + planning.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provisioner.config import parse_config
from provisioner.core.desired import desired_state
from provisioner.core.directory import ReadResult, interpret
from provisioner.core.model import RawEntry
from provisioner.sample import generate_directory


def read_result(people: int) -> ReadResult:
    directory = generate_directory(people, seed=1)
    persons, units, disabled = [], [], set()
    for e in directory.entries:
        classes = {c.lower() for c in e.get("objectClass")}
        attrs = {k.lower(): v for k, v in e.attributes if k.lower() != "objectclass"}
        if "inetorgperson" in classes:
            persons.append(RawEntry(e.dn, attrs))
            if e.first("employeeType") == "disabled":
                disabled.add(e.dn)
        elif "organizationalunit" in classes:
            units.append(RawEntry(e.dn, attrs))
    return ReadResult(persons, units, frozenset(disabled), True, None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, nargs="+", default=[25_000, 250_000])
    args = ap.parse_args()
    cfg = parse_config(
        {
            "homeserver": {"url": "http://127.0.0.1:1", "server_name": "example.test"},
            "directory": {"uri": "ldap://127.0.0.1:1", "bind_dn": "cn=x", "bind_password_env": "HOME",
                          "base_dn": "dc=mos,dc=test"},
            "layout": {"max_room_size": 200, "head_title_pattern": "^(Начальник|Руководитель|Глава|Префект)"},
        }
    )  # fmt: skip
    cols = ("people", "interpret", "plan", "total", "peak MB", "rooms", "largest")
    print(" ".join(f"{c:>9}" for c in cols))
    for n in args.people:
        result = read_result(n)
        gc.collect()
        # Timed without tracemalloc (it slows Python several-fold); memory measured in a second pass.
        t0 = time.perf_counter()
        snap = interpret(result, cfg.directory_policy(), skip_log=False)
        t1 = time.perf_counter()
        desired = desired_state(snap, cfg.layout_policy())
        t2 = time.perf_counter()
        del snap, desired
        gc.collect()
        tracemalloc.start()
        snap = interpret(result, cfg.directory_policy(), skip_log=False)
        desired = desired_state(snap, cfg.layout_policy())
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rooms = desired.layout.rooms
        largest = max(len(r.members) for r in rooms)
        row = (
            n,
            f"{t1 - t0:.2f}s",
            f"{t2 - t1:.2f}s",
            f"{t2 - t0:.2f}s",
            f"{peak / 2**20:.0f}",
            len(rooms),
            largest,
        )
        print(" ".join(f"{c:>9}" for c in row))


if __name__ == "__main__":
    main()
