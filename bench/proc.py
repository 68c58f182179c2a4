"""CPU and memory of a process and its descendants, read from ``/proc`` (Linux).

A server here is a process tree: PostgreSQL's postmaster forks one backend per connection, nginx's master its
workers. A backend that exited left its CPU in the postmaster's ``cutime``/``cstime`` (once reaped); a live one
holds its own. So a tree's CPU is the sum of utime + stime + cutime + cstime over the process and its live
descendants, and the difference of two readings is what the tree spent in between (a descendant that exits and
is reaped between the readings moves its CPU into its parent's reaped columns: nothing is lost or counted twice).

Memory is the tree's PSS (proportional set size, ``smaps_rollup``): the shared buffers every PostgreSQL backend
maps are counted once over the tree, where summing RSS would count them once per backend. Where
``smaps_rollup`` cannot be read, the process's RSS stands in.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK")


def children(pid: int, proc: Path = PROC) -> list[int]:
    """Live child processes of ``pid`` (children of its main thread: the servers here fork from it)."""
    with contextlib.suppress(OSError):
        return [int(c) for c in (proc / str(pid) / "task" / str(pid) / "children").read_text().split()]
    return []


def tree(pid: int, proc: Path = PROC) -> list[int]:
    """``pid`` and its live descendants."""
    out = [pid]
    for child in children(pid, proc):
        out += tree(child, proc)
    return out


def own_cpu_seconds(pid: int, proc: Path = PROC) -> float:
    """utime + stime + cutime + cstime of one process; 0 if it is gone."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        # The command name in field 2 may hold spaces and parentheses: split after the last ')'.
        fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / TICKS
    return 0.0


def cpu_seconds(pid: int, proc: Path = PROC) -> float:
    """CPU seconds of ``pid``, its reaped children and its live descendants."""
    return sum(own_cpu_seconds(p, proc) for p in tree(pid, proc))


def _kib(text: str, key: str) -> int | None:
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def own_memory_kib(pid: int, proc: Path = PROC) -> int:
    """PSS of one process in KiB (its RSS if ``smaps_rollup`` is unreadable); 0 if it is gone."""
    with contextlib.suppress(OSError, ValueError):
        found = _kib((proc / str(pid) / "smaps_rollup").read_text(), "Pss")
        if found is not None:
            return found
    with contextlib.suppress(OSError, ValueError):
        return _kib((proc / str(pid) / "status").read_text(), "VmRSS") or 0
    return 0


def memory_mib(pid: int, proc: Path = PROC) -> float:
    """PSS of ``pid`` and its live descendants, in MiB."""
    return sum(own_memory_kib(p, proc) for p in tree(pid, proc)) / 1024
