"""A private ``redis-server`` on a loopback port: Synapse's replication bus for the demo and the tests.

Synapse uses Redis for pub/sub between its processes only, so nothing is persisted (no RDB, no AOF) and
a restart loses nothing that matters. The server runs in the foreground as our child, with its files in
its own directory; the machine's Redis service is never touched.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from provisioner.embedded.ports import LOOPBACK, free_port, port_is_free

PORT_FILE = "port"


class RedisError(Exception):
    """redis-server could not be found or started; the message says why."""


def ping(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis:
    """One redis-server in ``root`` on ``port`` (kept in the directory so a restart reuses it)."""

    def __init__(self, root: Path, *, port: int | None = None, start_timeout: float = 15.0) -> None:
        self.root = Path(root).resolve()
        saved = self.root / PORT_FILE
        self.port = port or (int(saved.read_text()) if saved.exists() else free_port())
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "redis.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.is_running():
            return
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise RedisError("redis-server not found: apt-get install redis-server (or run scripts/setup.sh)")
        if not port_is_free(self.port):
            raise RedisError(f"port {LOOPBACK}:{self.port} is already in use; stop what listens there")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / PORT_FILE).write_text(str(self.port), encoding="utf-8")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        args = [binary, "--port", str(self.port), "--bind", LOOPBACK, "--dir", str(self.root)]
        args += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"]
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + self.start_timeout
        while not ping(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-1500:]
                raise RedisError(f"redis-server did not answer PING on {self.port}:\n{tail}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        process = self._process
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            self._process = None
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
