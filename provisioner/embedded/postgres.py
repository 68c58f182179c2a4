"""A private PostgreSQL cluster (Debian's ``postgresql-15``) on a loopback port, for the demo and the tests.

:class:`EmbeddedPostgres` owns one directory: the cluster (``data/``, made by ``initdb``), its log, the
superuser's password and a libpq ``pgpass`` file for Synapse. The server is started and stopped with
``pg_ctl`` on that data directory only, listens on 127.0.0.1 and keeps its unix socket inside the data
directory, so it never meets the machine's own PostgreSQL.

PostgreSQL refuses to run as root. Started by root, every PostgreSQL command runs as the ``postgres`` OS
user (the Debian package creates it), which then owns the directory; every directory above it must let
that user pass (``/tmp`` does, a pytest ``tmp_path`` under ``/tmp/pytest-of-root`` does not).
"""

from __future__ import annotations

import os
import pwd
import secrets
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from provisioner.embedded.ports import LOOPBACK, free_port, port_is_free
from provisioner.embedded.process import Server, log_tail

BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")
RUN_AS = "postgres"
DATA = "data"
LOG_FILE = "postgres.log"
PASSWORD_FILE = "password"
PGPASS_FILE = "pgpass"
PORT_FILE = "port"
SETTINGS_FILE = "civmatrix.conf"


class PostgresError(Exception):
    """The cluster could not be made, started or used; the message says why."""


def find_bin_dir() -> Path:
    for candidate in BIN_DIRS:
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise PostgresError("PostgreSQL not found: apt-get install postgresql (or run scripts/setup.sh)")


def _traversable(path: Path, uid: int, gids: set[int]) -> Path | None:
    """The first directory above ``path`` that the user cannot enter, or None."""
    for parent in reversed(path.parents):
        mode = parent.stat()
        if mode.st_uid == uid:
            ok = bool(mode.st_mode & stat.S_IXUSR)
        elif mode.st_gid in gids:
            ok = bool(mode.st_mode & stat.S_IXGRP)
        else:
            ok = bool(mode.st_mode & stat.S_IXOTH)
        if not ok:
            return parent
    return None


class EmbeddedPostgres(Server):
    """One cluster in ``root``; ``port`` is kept in the directory so a restart reuses it.

    ``durable=False`` turns off fsync (tests: a machine crash may lose the cluster, nothing else does).
    """

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        user: str = "synapse",
        database: str = "synapse",
        durable: bool = True,
        start_timeout: float = 60.0,
    ) -> None:
        self.root = Path(root).resolve()
        self.user = user
        self.database = database
        self.durable = durable
        self.start_timeout = start_timeout
        self.bin_dir = find_bin_dir()
        saved = self.root / PORT_FILE
        self.port = port or (int(saved.read_text()) if saved.exists() else free_port())
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(RUN_AS)
            except KeyError:
                raise PostgresError(
                    f"PostgreSQL refuses to run as root and there is no {RUN_AS!r} user to run it as "
                    "(apt-get install postgresql creates it)"
                ) from None
            self._run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            self._uid, self._gid = entry.pw_uid, entry.pw_gid
        else:
            self._uid, self._gid = os.getuid(), os.getgid()

    # --- paths -----------------------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.root / DATA

    @property
    def log_path(self) -> Path:
        return self.root / LOG_FILE

    @property
    def pgpass_path(self) -> Path:
        """A libpq password file for ``user`` on this port (Synapse's ``passfile``)."""
        return self.root / PGPASS_FILE

    @property
    def password(self) -> str:
        return (self.root / PASSWORD_FILE).read_text(encoding="utf-8").strip()

    def dsn(self) -> dict[str, Any]:
        """Connection settings for psycopg2 / Synapse's ``database.args``."""
        return {
            "host": LOOPBACK,
            "port": self.port,
            "user": self.user,
            "database": self.database,
            "passfile": str(self.pgpass_path),
        }

    # --- commands --------------------------------------------------------------------------------------

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, PGPASSFILE=str(self.pgpass_path), LC_ALL="C")
        result = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.root,
            check=False,
            **self._run_as,
        )
        if check and result.returncode != 0:
            raise PostgresError(
                f"{args[0]} failed ({result.returncode}): {(result.stderr or result.stdout).strip()[-1500:]}"
            )
        return result

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        gids = {self._gid, *os.getgrouplist(pwd.getpwuid(self._uid).pw_name, self._gid)}
        blocked = _traversable(self.root, self._uid, gids)
        if blocked is not None:
            raise PostgresError(
                f"PostgreSQL runs as {pwd.getpwuid(self._uid).pw_name!r}, which cannot enter {blocked} "
                f"(mode {stat.S_IMODE(blocked.stat().st_mode):o}); put its directory {self.root} somewhere "
                "that user can reach (for example under /tmp or in a checkout readable by others)"
            )
        os.chown(self.root, self._uid, self._gid)
        self.root.chmod(0o700)
        (self.root / PORT_FILE).write_text(str(self.port), encoding="utf-8")

    def _write_secret(self, name: str, text: str) -> None:
        path = self.root / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chown(path, self._uid, self._gid)

    def initialise(self) -> bool:
        """Make the cluster once (``initdb``); False when it already exists."""
        self._prepare_root()
        if (self.data_dir / "PG_VERSION").exists():
            return False
        if not (self.root / PASSWORD_FILE).exists():
            self._write_secret(PASSWORD_FILE, secrets.token_urlsafe(24))
        # Password authentication even on loopback: other accounts on the machine share 127.0.0.1.
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            f"--pwfile={self.root / PASSWORD_FILE}",
            "--auth=scram-sha-256",
            # Synapse refuses a database whose collation is not C.
            "--encoding=UTF8",
            "--locale=C",
        )
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(f"\ninclude_if_exists '{SETTINGS_FILE}'\n")
        return True

    def _write_settings(self) -> None:
        settings = {
            "listen_addresses": f"'{LOOPBACK}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.data_dir}'",
            # 4 Synapse processes x cp_max 10, the bench's and tests' own connections, and headroom.
            "max_connections": "100",
            "shared_buffers": "128MB",
            # Losing the last few commits on a machine crash is fine for the demo; corruption is not.
            "synchronous_commit": "off",
            "fsync": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
        }
        text = "# Written by civmatrix (provisioner.embedded.postgres) at every start.\n" + "".join(
            f"{key} = {value}\n" for key, value in settings.items()
        )
        path = self.data_dir / SETTINGS_FILE
        path.write_text(text, encoding="utf-8")
        os.chown(path, self._uid, self._gid)
        self._write_secret(PGPASS_FILE, f"{LOOPBACK}:{self.port}:*:{self.user}:{self.password}\n")

    def is_running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        return self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0

    def start(self) -> None:
        """Initialise if needed, start, and make sure the database exists (C collation)."""
        self.initialise()
        if self.is_running():
            return
        if not port_is_free(self.port):
            raise PostgresError(f"port {LOOPBACK}:{self.port} is already in use; stop what listens there")
        self._write_settings()
        result = self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            str(int(self.start_timeout)),
            "start",
            check=False,
        )
        if result.returncode != 0:
            raise PostgresError(f"PostgreSQL did not start:\n{result.stdout}{result.stderr}\n{self._tail()}")
        self._ensure_database()

    def _psql(self, sql: str, database: str = "postgres") -> str:
        return self._run(
            "psql", "-h", LOOPBACK, "-p", str(self.port), "-U", self.user, "-d", database, "-tAqc", sql
        ).stdout.strip()

    def _ensure_database(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'")
                break
            except PostgresError:
                # pg_ctl -w returns when the postmaster accepts connections; a promoted startup may lag.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        if exists != "1":
            self._psql(
                f"CREATE DATABASE {self.database} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
                "TEMPLATE template0"
            )

    def create_database(self, name: str) -> None:
        """Another empty database in the same cluster (C collation), e.g. one per test."""
        self._psql(f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")

    def query(self, sql: str, database: str | None = None) -> list[list[str]]:
        """Run one statement with psql and return its rows (fields as text): for checks in tests."""
        out = self._psql(sql, database or self.database)
        return [line.split("|") for line in out.splitlines() if line]

    def _tail(self) -> str:
        return log_tail(self.log_path, 20, "(no log)")

    def stop(self, timeout: float = 60.0) -> None:
        """Fast shutdown (open transactions are rolled back); a stopped cluster is a no-op."""
        if not self.is_running():
            return
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(int(timeout)), "stop")
