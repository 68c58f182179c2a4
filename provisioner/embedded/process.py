"""The lifecycle every embedded server shares: one child process of ours, its output in a log file.

:class:`ChildProcess` starts a server in its own session with stdin closed and stdout and stderr appended to
a log file, waits until a readiness probe passes (or the process exits, or a deadline passes), and stops it
with a signal, then SIGKILL after a timeout. :func:`log_tail` quotes the end of a log in error messages.
:class:`Server` gives every manager ``with manager:`` (start, then stop whatever happens).
What is specific to a server (its binary, config, probe and error texts) stays in its manager.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)


def log_tail(path: Path, lines: int = 20, missing: str = "(no log)") -> str:
    """The last ``lines`` lines of the file at ``path``, or ``missing`` when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return missing
    return "\n".join(text.splitlines()[-lines:])


class ChildProcess:
    """At most one running server process, named ``name`` in log messages."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited, else None."""
        return self.process.poll() if self.process is not None else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(
        self,
        args: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Start ``args`` in a session of its own (a Ctrl-C in our terminal reaches only us), its output
        appended to ``log_path``."""
        with open(log_path, "ab") as output:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                list(args),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, ready: Callable[[], bool], deadline: float, interval: float = 0.05) -> bool:
        """Poll ``ready()`` until it holds (True), or the process exits or ``time.monotonic()`` passes
        ``deadline`` (False: :attr:`returncode` tells which)."""
        process = self.process
        assert process is not None, "wait_ready before spawn"
        while True:
            if process.poll() is not None:
                return False
            if ready():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(interval)

    def stop(
        self, timeout: float, *, sig: signal.Signals = signal.SIGTERM, kill_group: bool = False
    ) -> int | None:
        """Send ``sig``, SIGKILL after ``timeout`` seconds (the whole process group with ``kill_group``:
        a master and its workers); return the exit code. A stopped or never started process is a no-op."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is not None:
            return process.returncode
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning(
                "%s (pid %d) ignored %s for %.0fs; killing it", self.name, process.pid, sig.name, timeout
            )
            with contextlib.suppress(ProcessLookupError):
                if kill_group:
                    os.killpg(process.pid, signal.SIGKILL)
                else:
                    process.kill()
            return process.wait()


class Server(ABC):
    """A manager with ``start`` and ``stop``: ``with server:`` starts it and always stops it."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
