"""One sync or watch acts on a server at a time: advisory file locks in ``sync.state_dir``.

``run.lock`` is held while a run reads and writes (``sync``, and each run of ``watch``); ``watch.lock`` for
the whole life of a watch, so a second watch is refused while a manual ``sync`` can still run between the
watch's runs. The kernel drops a lock when its holder dies (``flock``), so a crash never leaves a stale lock;
the holder writes its pid and what it does into the file so that the one refused can say who holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Locked(Exception):
    """Another process holds the lock; the message names its pid and what it is doing."""

    def __init__(self, path: Path, holder: dict[str, object]) -> None:
        self.path = path
        self.holder = holder
        pid = holder.get("pid", "?")
        what = holder.get("what", "a sync")
        since = holder.get("since")
        when = ""
        if isinstance(since, int | float):
            when = time.strftime(" since %Y-%m-%d %H:%M:%S UTC", time.gmtime(float(since)))
        super().__init__(
            f"another provisioner ({what}, pid {pid}{when}) holds {path}: only one sync or watch acts on a "
            "server at a time; wait for it or stop it"
        )


@contextmanager
def hold(state_dir: str | os.PathLike[str], name: str, what: str) -> Iterator[None]:
    """Hold ``<state_dir>/<name>.lock`` or raise :class:`Locked` at once (never waits)."""
    os.makedirs(state_dir, exist_ok=True)
    path = Path(state_dir) / f"{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Locked(path, _holder(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "what": what, "since": time.time()}).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> dict[str, object]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
