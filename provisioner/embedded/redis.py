"""A private ``redis-server`` on a loopback port: Synapse's replication bus for the demo and the tests.

Synapse uses Redis for pub/sub between its processes only, so nothing is persisted (no RDB, no AOF) and
a restart loses nothing that matters. The server runs in the foreground as our child, with its files in
its own directory; the machine's Redis service is never touched.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

from provisioner.embedded.ports import LOOPBACK, free_port, port_is_free
from provisioner.embedded.process import ChildProcess, Server

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


class EmbeddedRedis(Server):
    """One redis-server in ``root`` on ``port`` (kept in the directory so a restart reuses it)."""

    def __init__(self, root: Path, *, port: int | None = None, start_timeout: float = 15.0) -> None:
        self.root = Path(root).resolve()
        saved = self.root / PORT_FILE
        self.port = port or (int(saved.read_text()) if saved.exists() else free_port())
        self.start_timeout = start_timeout
        self._child = ChildProcess("redis-server")

    @property
    def log_path(self) -> Path:
        return self.root / "redis.log"

    @property
    def pid(self) -> int | None:
        return self._child.pid

    def is_running(self) -> bool:
        return self._child.is_running()

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
        args = [binary, "--port", str(self.port), "--bind", LOOPBACK, "--dir", str(self.root)]
        args += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"]
        self._child.spawn(args, self.log_path)
        if not self._child.wait_ready(lambda: ping(self.port), time.monotonic() + self.start_timeout):
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-1500:]
            raise RedisError(f"redis-server did not answer PING on {self.port}:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        self._child.stop(timeout)
