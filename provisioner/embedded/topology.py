"""The production topology on one machine: PostgreSQL, Redis, Synapse main + workers, nginx in front.

:class:`Topology` starts, on loopback and under one directory, exactly what :mod:`provisioner.deploy`
describes for a deployment: the Synapse files are :func:`provisioner.deploy.deployment_files` of a
``target="host"`` :class:`~provisioner.deploy.Deployment` (the same renderer that writes
``deploy/synapse/workers``), and nginx serves :func:`provisioner.deploy.proxy_model` of it (the same renderer
as ``deploy/nginx``) without TLS, or with a given certificate. PostgreSQL, Redis and nginx are private
processes (:mod:`~provisioner.embedded.postgres`, :mod:`~provisioner.embedded.redis`,
:mod:`~provisioner.embedded.nginx`); nothing of the machine's own services is used.

Ports are picked once and kept in ``topology.json``, so ``start`` after ``stop`` resumes the same server.
Everything is stopped in the reverse order of starting: nginx, workers, main, Redis, PostgreSQL.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner import deploy, proxy
from provisioner.embedded.nginx import EmbeddedNginx
from provisioner.embedded.ports import LOOPBACK, free_ports, port_is_free
from provisioner.embedded.postgres import EmbeddedPostgres
from provisioner.embedded.process import ChildProcess, Server, log_tail
from provisioner.embedded.redis import EmbeddedRedis
from provisioner.embedded.synapse import (
    RegisteredAccount,
    answers_health,
    exempt_from_rate_limits,
    register_account,
)
from provisioner.synapse.config import SynapseError, synapse_env

log = logging.getLogger(__name__)

STATE_FILE = "topology.json"
REGISTRATION_SECRET = "registration_shared_secret"


@dataclass
class _Process:
    """One Synapse process (main or worker) started from the generated files."""

    name: str
    args: list[str]
    health_ports: tuple[int, ...]
    log_path: Path
    child: ChildProcess = field(init=False)

    def __post_init__(self) -> None:
        self.child = ChildProcess(f"synapse {self.name}")

    def start(self, cwd: Path, python: str) -> None:
        self.child.spawn([python, "-m", *self.args], self.log_path, cwd=cwd, env=synapse_env())

    def wait_healthy(self, deadline: float) -> None:
        for port in self.health_ports:
            if not self.child.wait_ready(
                functools.partial(answers_health, f"http://{LOOPBACK}:{port}"), deadline, interval=0.1
            ):
                code = self.child.returncode
                state = f"exited with code {code}" if code is not None else "did not answer /health in time"
                tail = log_tail(self.log_path, 30)
                raise SynapseError(f"Synapse {self.name} {state}:\n{tail}")

    def stop(self, timeout: float = 30.0) -> None:
        self.child.stop(timeout)


class Topology(Server):
    """PostgreSQL + Redis + Synapse main + workers + nginx, all under ``root``.

    ``login`` is the directory-login module's config (``module_config_from(cfg)``); ``overrides`` are merged
    into ``homeserver.yaml`` last (rate limits of the demo and tests). ``tls`` serves HTTPS with that pair.
    ``search_port``: where a search service listens (nginx falls back to Synapse when it is down).
    """

    def __init__(
        self,
        root: Path,
        *,
        server_name: str = "example.test",
        sync_workers: int = 1,
        event_persisters: int = 1,
        login: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
        tls: proxy.Tls | None = None,
        search_port: int | None = None,
        durable: bool = True,
        python: str = sys.executable,
        start_timeout: float = 120.0,
    ) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.python = python
        self.start_timeout = start_timeout
        self.tls = tls
        ports = self._ports(3 + sync_workers + 2 * event_persisters + 2)
        self.nginx_port = ports["nginx"]
        self.postgres = EmbeddedPostgres(self.root / "postgres", port=ports["postgres"], durable=durable)
        self.redis = EmbeddedRedis(self.root / "redis", port=ports["redis"])
        scheme = "https" if tls else "http"
        self.public_url = f"{scheme}://{LOOPBACK}:{self.nginx_port}"
        secrets_dir = self.root / "secrets"
        paths = deploy.Paths(
            config_dir=str(self.root / "synapse"),
            data_dir=str(self.root / "synapse" / "data"),
            secrets_dir=str(secrets_dir),
            tls_cert=tls.cert if tls else "",
            tls_key=tls.key if tls else "",
        )
        self.deployment = deploy.standard_deployment(
            server_name,
            self.public_url + "/",
            element_url=f"http://{LOOPBACK}:1/",
            target="host",
            sync_workers=sync_workers,
            event_persisters=event_persisters,
            login=login,
            database=deploy.Postgres(
                host=LOOPBACK,
                port=self.postgres.port,
                user=self.postgres.user,
                database=self.postgres.database,
                passfile=str(self.postgres.pgpass_path),
            ),
            redis=deploy.Redis(host=LOOPBACK, port=self.redis.port),
            paths=paths,
            ports=iter(ports["synapse"]),
            # Account creation for the demo and the tests (the admin and the bot); production has none.
            overrides={"registration_shared_secret_path": str(secrets_dir / REGISTRATION_SECRET)}
            | dict(overrides or {}),
            search_port=search_port,
        )
        listen = f"{LOOPBACK}:{self.nginx_port}" + (" ssl" if tls else "")
        self.proxy = deploy.proxy_model(self.deployment, listen=(listen,), tls=tls)
        self.nginx = EmbeddedNginx(self.root / "nginx", proxy.site(self.proxy), port=self.nginx_port)
        self.processes: list[_Process] = []
        self._started: list[str] = []

    # --- ports -----------------------------------------------------------------------------------------

    def _ports(self, synapse_ports: int) -> dict[str, Any]:
        path = self.root / STATE_FILE
        if path.exists():
            saved: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            if len(saved["synapse"]) == synapse_ports:
                return saved
        picked = free_ports(synapse_ports + 3)
        saved = {"nginx": picked[0], "postgres": picked[1], "redis": picked[2], "synapse": picked[3:]}
        path.write_text(json.dumps(saved), encoding="utf-8")
        return saved

    # --- addresses -------------------------------------------------------------------------------------

    @property
    def admin_url(self) -> str:
        """The main process's loopback admin listener (the provisioner and the bot)."""
        return f"http://{LOOPBACK}:{self.deployment.admin_port}"

    @property
    def main_url(self) -> str:
        """The main process's client listener, bypassing nginx (trusts X-Forwarded-For: tests only)."""
        return f"http://{LOOPBACK}:{self.deployment.public_port}"

    @property
    def config_dir(self) -> Path:
        return Path(self.deployment.paths.config_dir)

    def log_path(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    @property
    def process_names(self) -> list[str]:
        return ["main", *(w.name for w in self.deployment.workers)]

    def pids(self) -> dict[str, int]:
        """Running processes by name (Synapse processes, nginx master, redis, the postmaster)."""
        found = {p.name: p.child.pid for p in self.processes if p.child.pid and p.child.is_running()}
        if self.nginx.pid:
            found["nginx"] = self.nginx.pid
        if self.redis.pid:
            found["redis"] = self.redis.pid
        pid_file = self.postgres.data_dir / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            found["postgres"] = int(pid_file.read_text().split()[0])
        return found

    # --- files -----------------------------------------------------------------------------------------

    def write_files(self) -> None:
        """The Synapse files from the deployment renderer, the secrets, and the nginx config."""
        d = self.deployment
        deploy.ensure_secrets(Path(d.paths.secrets_dir), d.database)
        secret = Path(d.paths.secrets_dir) / REGISTRATION_SECRET
        if not secret.exists():
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(os.urandom(24).hex())
        files = deploy.deployment_files(d)
        for rel, text in files.items():
            if not rel.startswith("synapse/"):
                continue  # nginx: proxy_model with our listen address; Element: not run here
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        Path(d.paths.data_dir, "media_store").mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)

    def _synapse_processes(self) -> list[_Process]:
        d = self.deployment
        homeserver = str(self.config_dir / "homeserver.yaml")
        main = _Process(
            "main",
            ["synapse.app.homeserver", "-c", homeserver],
            (d.public_port, d.admin_port),
            self.log_path("main"),
        )
        workers = [
            _Process(
                w.name,
                [
                    "synapse.app.generic_worker",
                    "-c",
                    homeserver,
                    "-c",
                    str(self.config_dir / "workers" / f"{w.name}.yaml"),
                ],
                tuple(p for p in (w.client_port, w.replication_port) if p),
                self.log_path(w.name),
            )
            for w in d.workers
        ]
        return [main, *workers]

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start everything and return when nginx answers for Synapse; on failure stop what started."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        began = time.monotonic()
        self.write_files()
        self.postgres.start()
        self._started.append("postgres")
        self.redis.start()
        self._started.append("redis")
        deadline = time.monotonic() + self.start_timeout
        self.processes = self._synapse_processes()
        for proc in self.processes:
            for port in proc.health_ports:
                if not port_is_free(port):
                    raise SynapseError(f"port {LOOPBACK}:{port} for Synapse {proc.name} is already in use")
        main, *workers = self.processes
        main.start(self.root, self.python)
        # The main process creates or upgrades the schema; workers refuse to start on an old one.
        main.wait_healthy(deadline)
        for worker in workers:
            worker.start(self.root, self.python)
        for worker in workers:
            worker.wait_healthy(deadline)
        self.nginx.start()
        self._started.append("nginx")
        log.info("topology up in %.1fs: %s", time.monotonic() - began, self.public_url)

    def wait_for_background_updates(self, timeout: float = 300.0) -> None:
        """Return once Synapse has no background update pending.

        A fresh database schedules ``populate_user_directory``, whose first batch empties the user
        directory: accounts a sync created before it ran vanish from search. A bulk sync waits for this.
        """
        deadline = time.monotonic() + timeout
        while self.postgres.query("SELECT count(*) FROM background_updates") != [["0"]]:
            if time.monotonic() > deadline:
                raise SynapseError(f"Synapse's background updates did not finish within {timeout:.0f}s")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop in reverse order: nginx, workers, main, Redis, PostgreSQL (each only if we started it)."""
        self.nginx.stop()
        for proc in reversed(self.processes):
            proc.stop()
        self.processes = []
        self.redis.stop()
        if "postgres" in self._started:
            self.postgres.stop()
        self._started = []

    # --- accounts --------------------------------------------------------------------------------------

    def _secret(self) -> str:
        path = Path(self.deployment.paths.secrets_dir) / REGISTRATION_SECRET
        return path.read_text(encoding="utf-8").strip()

    def register(
        self,
        localpart: str,
        password: str | None = None,
        *,
        admin: bool = False,
        displayname: str | None = None,
    ) -> RegisteredAccount:
        return register_account(
            self.admin_url, self._secret(), localpart, password, admin=admin, displayname=displayname
        )

    def create_admin(self, localpart: str = "admin") -> RegisteredAccount:
        account = self.register(localpart, admin=True)
        exempt_from_rate_limits(self.admin_url, account)
        return account

    def error_lines(self) -> dict[str, list[str]]:
        """ERROR (and CRITICAL) lines of every Synapse process's log, by process name."""
        found: dict[str, list[str]] = {}
        for name in self.process_names:
            path = self.log_path(name)
            if path.exists():
                bad = [
                    line
                    for line in path.read_text(errors="replace").splitlines()
                    if " ERROR " in line or " CRITICAL " in line
                ]
                if bad:
                    found[name] = bad
        return found


@contextlib.contextmanager
def running_topology(root: Path, **kwargs: Any) -> Iterator[Topology]:
    topology = Topology(root, **kwargs)
    topology.start()
    try:
        yield topology
    finally:
        topology.stop()
