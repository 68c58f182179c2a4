"""The process managers of nginx, PostgreSQL and Redis refuse bad input with a message that says what to fix.

Their happy paths run in tests/test_topology.py (the whole topology) and tests/test_demo.py.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner import proxy
from provisioner.embedded.nginx import EmbeddedNginx, NginxError
from provisioner.embedded.ports import LOOPBACK, free_port
from provisioner.embedded.postgres import EmbeddedPostgres, PostgresError
from provisioner.embedded.redis import EmbeddedRedis, RedisError


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _site(port: int) -> str:
    model = proxy.Proxy(
        server_name="_",
        public_baseurl=f"http://{LOOPBACK}:{port}",
        listen=(f"{LOOPBACK}:{port}",),
        main=proxy.Upstream(proxy.MAIN, (f"{LOOPBACK}:{free_port()}",)),
    )
    return proxy.site(model)


def test_nginx_quotes_its_own_complaint_about_a_broken_site(tmp_path: Path) -> None:
    port = free_port()
    nginx = EmbeddedNginx(tmp_path / "nginx", _site(port) + "\nthis_is_not_a_directive on;\n", port=port)
    with pytest.raises(NginxError, match=r"nginx rejects .*unknown directive \"this_is_not_a_directive\""):
        nginx.start()
    assert not nginx.is_running()


def test_nginx_names_a_port_already_in_use(tmp_path: Path, busy_port: int) -> None:
    nginx = EmbeddedNginx(tmp_path / "nginx", _site(busy_port), port=busy_port)
    with pytest.raises(NginxError, match=rf"port 127.0.0.1:{busy_port} is already in use"):
        nginx.start()


def test_the_rendered_site_passes_nginx_t_and_serves_well_known(tmp_path: Path) -> None:
    import json
    import urllib.request

    port = free_port()
    nginx = EmbeddedNginx(tmp_path / "nginx", _site(port), port=port)
    with nginx, urllib.request.urlopen(f"http://{LOOPBACK}:{port}/.well-known/matrix/client") as reply:
        wellknown = json.loads(reply.read())
        assert wellknown["m.homeserver"] == {"base_url": f"http://{LOOPBACK}:{port}"}
        assert wellknown["io.element.e2ee"]["secure_backup_required"] is True
        assert reply.headers["Access-Control-Allow-Origin"] == "*"
    assert not nginx.is_running()
    # Its files stay under its own prefix.
    assert {"nginx.conf", "error.log", "access.log"} <= {p.name for p in (tmp_path / "nginx").iterdir()}


def test_postgres_names_the_directory_its_user_cannot_enter(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    blocked.chmod(0o000)
    try:
        with pytest.raises(PostgresError, match=r"cannot enter (/\S*) \(mode \d+\)") as caught:
            EmbeddedPostgres(blocked / "pg").start()
        # The first directory on the way that the server's user cannot pass (pytest's own base directory
        # when run as root, else the blocked one).
        found = re.search(r"cannot enter (/\S*) ", str(caught.value))
        assert found is not None
        named = Path(found.group(1))
        assert named in (blocked / "pg").parents
    finally:
        blocked.chmod(0o700)


def test_redis_names_a_port_already_in_use(tmp_path: Path, busy_port: int) -> None:
    with pytest.raises(RedisError, match=rf"port 127.0.0.1:{busy_port} is already in use"):
        EmbeddedRedis(tmp_path / "redis", port=busy_port).start()
