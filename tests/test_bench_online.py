"""The pure parts of bench/online.py: delivery bookkeeping and CPU/memory accounting from a fake /proc tree.

The bench itself is not a test (it runs for tens of minutes); these check what its figures are made from.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.online import (
    Deliveries,
    Snapshot,
    above_idle,
    cost,
    machine_busy_seconds,
    per_thousand_minute,
)
from bench.proc import TICKS, cpu_seconds, memory_mib, tree


def test_a_message_is_measured_to_each_recipient_online_when_it_was_sent() -> None:
    d = Deliveries()
    d.on_send("a", 10.0, ["@x:t", "@y:t"])
    d.on_seen("a", "@x:t", 10.25)
    d.on_seen("a", "@x:t", 11.0)  # a later sync repeating it: the first sighting counts
    d.on_send("b", 12.0, ["@x:t"])
    # The recipient's sync returned it before the sender's PUT answered (and so before on_send ran).
    d.on_seen("c", "@y:t", 13.5)
    d.on_send("c", 13.4, ["@y:t"])
    d.on_seen("c", "@z:t", 13.6)  # not a recipient when it was sent (came online later): not counted
    d.on_send("late", 20.0, ["@x:t"])
    latencies, missing, messages = d.between(10.0, 20.0)
    assert messages == 3
    assert sorted(round(x, 3) for x in latencies) == [0.1, 0.25]
    assert missing == 2  # @y never saw "a"; @x never saw "b"


def test_a_message_with_no_one_else_online_counts_no_delivery() -> None:
    d = Deliveries()
    d.on_send("a", 1.0, [])
    assert d.between(0.0, 2.0) == ([], 0, 1)


def test_cpu_per_thousand_online_per_minute() -> None:
    # 2,000 people online for 30 s cost 6 CPU seconds: 3 s per 1,000 per 30 s, 6 s per 1,000 per minute.
    assert per_thousand_minute(6.0, 2000, 30.0) == pytest.approx(6.0)
    assert per_thousand_minute(6.0, 0, 30.0) == 0.0


def test_the_cost_of_the_people_is_the_cpu_less_what_the_process_spends_with_nobody_online() -> None:
    # 500 online: 12 s per 1,000 per minute = 0.1 core; idle 0.04 core is 4.8 s per 1,000 per minute of it.
    assert above_idle({"main": 12.0, "nginx": 1.0}, {"main": 0.04}, 500) == {"main": 7.2, "nginx": 1.0}
    assert above_idle({"main": 12.0}, {"main": 0.04}, 0) == {"main": 0.0}


def _stat(proc: Path, pid: int, ticks: tuple[int, int, int, int], comm: str = "postgres") -> None:
    d = proc / str(pid)
    (d / "task" / str(pid)).mkdir(parents=True, exist_ok=True)
    # Fields 14-17 are utime, stime, cutime, cstime; the command name may hold spaces and ')'.
    rest = ["S", "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0", *map(str, ticks), "20", "0"]
    (d / "stat").write_text(f"{pid} ({comm}) {' '.join(rest)}\n")


def _fake_proc(tmp_path: Path) -> Path:
    proc = tmp_path / "proc"
    _stat(proc, 100, (TICKS * 2, TICKS, TICKS * 4, 0), comm="postgres: main) (x")  # 4 s reaped backends
    _stat(proc, 101, (TICKS, 0, 0, 0))
    _stat(proc, 102, (0, TICKS // 2, 0, 0))
    _stat(proc, 103, (TICKS * 3, 0, 0, 0))  # not in the tree
    (proc / "100" / "task" / "100" / "children").write_text("101 102")
    (proc / "101" / "task" / "101" / "children").write_text("")
    (proc / "100" / "smaps_rollup").write_text("Rss:  9000 kB\nPss:  3072 kB\n")
    (proc / "101" / "smaps_rollup").write_text("Rss:  9000 kB\nPss:  1024 kB\n")
    (proc / "102" / "status").write_text("Name: x\nVmRSS:  2048 kB\n")  # no smaps_rollup: RSS stands in
    return proc


def test_a_process_trees_cpu_and_memory_from_proc(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path)
    assert sorted(tree(100, proc)) == [100, 101, 102]
    assert cpu_seconds(100, proc) == pytest.approx(2 + 1 + 4 + 1 + 0.5)
    assert memory_mib(100, proc) == pytest.approx((3072 + 1024 + 2048) / 1024)
    assert cpu_seconds(999, proc) == 0.0  # gone between listing and reading: nothing, no error
    assert memory_mib(999, proc) == 0.0


def test_the_machine_busy_time_leaves_out_idle_and_iowait(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    # user nice system idle iowait irq softirq steal guest guest_nice
    (proc / "stat").write_text(
        f"cpu  {TICKS * 3} {TICKS} {TICKS * 2} {TICKS * 50} {TICKS * 7} 0 0 0 0 0\ncpu0 1\n"
    )
    assert machine_busy_seconds(proc) == pytest.approx(6.0)


def test_cost_splits_server_load_generator_and_the_rest_of_the_machine() -> None:
    a = Snapshot(0.0, {"main": 10.0, "postgres": 5.0}, {}, 1.0, 100.0)
    b = Snapshot(60.0, {"main": 16.0, "postgres": 8.0}, {"main": 300.0, "postgres": 120.0}, 4.0, 130.0)
    got = cost(a, b, 500)
    assert got["cpu_per_1000_per_min"] == {"main": 12.0, "postgres": 6.0}
    assert got["server_cores"] == pytest.approx(9 / 60, abs=1e-3)
    assert got["loadgen_cores"] == pytest.approx(3 / 60, abs=1e-3)
    assert got["other_cores"] == pytest.approx((30 - 9 - 3) / 60, abs=1e-3)
    assert got["memory_mib"] == {"main": 300, "postgres": 120}
