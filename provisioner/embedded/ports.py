"""Free TCP ports on loopback for the servers the demo and the tests start.

The kernel picks the port (bind to port 0), so two helpers running at once do not collide on a guess.
There is an unavoidable window between closing the probe socket and the server binding the port; callers
that start a server should still report "address in use" clearly (see :func:`port_is_free`).
"""

from __future__ import annotations

import socket

from provisioner.synapse.config import LOOPBACK

__all__ = ["LOOPBACK", "free_port", "free_ports", "port_is_free"]


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct free ports (all probe sockets are held open together so none repeats)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when a server could bind ``host:port`` now (SO_REUSEADDR, as Twisted and slapd bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
