"""The search snapshot: what the sync leaves for the directory search service, one JSON file.

The provisioner writes it at the end of every applied sync; the service loads it into an in-memory index
(:mod:`bridge.search.index`). It lists only people a colleague can reach: active managed accounts — locked,
deactivated, excluded and service accounts never appear. The file is replaced atomically (written beside
it, flushed, renamed over it), so a reader sees the old snapshot or the new one, never half of one.
This module does file I/O only; it imports nothing from aiohttp, so the provisioner may use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SNAPSHOT_VERSION = 1


class SnapshotError(Exception):
    """The snapshot file is missing or not a civmatrix search snapshot; names the file and why."""


@dataclass(frozen=True, slots=True)
class IndexedPerson:
    user_id: str
    display_name: str
    login: str
    sort_name: str = ""
    title: str | None = None
    department: tuple[str, ...] = ()  # unit path, top level first, as in the space names
    email: str | None = None
    phone: str | None = None
    avatar_url: str | None = None

    @property
    def name_parts(self) -> tuple[str, ...]:
        return tuple(self.display_name.split())


def _to_json(p: IndexedPerson) -> dict[str, Any]:
    return {
        "user_id": p.user_id, "display_name": p.display_name, "name_parts": list(p.name_parts),
        "login": p.login, "sort_name": p.sort_name, "title": p.title, "department": list(p.department),
        "email": p.email, "phone": p.phone, "avatar_url": p.avatar_url,
    }  # fmt: skip


def _opt(d: dict[str, Any], key: str) -> str | None:
    v = d.get(key)
    return v if isinstance(v, str) and v else None


def _from_json(d: dict[str, Any]) -> IndexedPerson:
    dept = d.get("department") or []
    return IndexedPerson(
        user_id=str(d["user_id"]),
        display_name=str(d["display_name"]),
        login=str(d.get("login") or ""),
        sort_name=str(d.get("sort_name") or ""),
        title=_opt(d, "title"),
        department=tuple(str(x) for x in dept) if isinstance(dept, list) else (),
        email=_opt(d, "email"),
        phone=_opt(d, "phone"),
        avatar_url=_opt(d, "avatar_url"),
    )


def write_snapshot(
    path: str | os.PathLike[str], people: Iterable[IndexedPerson], *, generated_at: float
) -> int:
    """Replace the snapshot at ``path`` atomically; returns how many people it holds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = [_to_json(p) for p in sorted(people, key=lambda p: p.user_id)]
    data = {"version": SNAPSHOT_VERSION, "generated_at": generated_at, "people": rows}
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False, separators=(",", ":"))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    return len(rows)


Stamp = tuple[int, int, int]


def snapshot_stamp(path: str | os.PathLike[str]) -> Stamp | None:
    """What changes when the sync replaces the file (inode, mtime, size); ``None`` while there is none.

    The sync writes a new file and renames it over the old one, so the inode alone would do; mtime and size
    also catch a file rewritten in place by hand.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def read_snapshot(path: str | os.PathLike[str]) -> tuple[float, Sequence[IndexedPerson]]:
    """(generated_at, people) from the snapshot at ``path``; :class:`SnapshotError` if unusable."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise SnapshotError(f"{path}: no search snapshot yet (run `provisioner sync` once)") from None
    except (OSError, ValueError) as e:
        raise SnapshotError(f"{path}: cannot read the search snapshot: {e}") from None
    if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
        raise SnapshotError(f"{path}: not a civmatrix search snapshot (version {SNAPSHOT_VERSION})")
    try:
        people = [_from_json(d) for d in data["people"]]
        return float(data.get("generated_at", 0.0)), people
    except (KeyError, TypeError, ValueError) as e:
        raise SnapshotError(f"{path}: damaged search snapshot: {e!r}") from None
