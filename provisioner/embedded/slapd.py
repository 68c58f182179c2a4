"""A real OpenLDAP slapd on loopback, owned by one data directory (for the demo, the tests and the benches).

Everything lives under ``data_dir``: ``slapd.conf``, the mdb database in ``db/``, the password files, the
LDIF files it loads and ``slapd.log``. Nothing under /etc/ldap or /var/lib/ldap is touched.

Rules the configuration keeps:

* Rule 1: ``sizelimit`` (500, OpenLDAP's default) applies to everyone except the rootdn, as on a real server.
* Rule 2: the service account ``cn=provisioner,<suffix>`` reads the whole tree. With
  ``paged_total_unlimited_for_service=True`` its *paged* searches may return every entry
  (``limits ... size.prtotal=unlimited``, slapd.conf(5) "limits") while an unpaged search still stops at
  ``sizelimit`` with sizeLimitExceeded; with ``False`` its paged searches stop there too, which is how tests
  prove a reader notices a truncated read.
* Rule 3: the service account's password is the one this object holds: :meth:`start` sets it (and creates the
  entry if the loaded data has none), whatever the LDIF said.
* Rule 4: anonymous clients may read the root DSE and the schema, nothing else.
* Rule 5: the ``syncprov`` overlay runs on the database, so ``contextCSN`` on the suffix moves with each write
  (``provisioner watch`` polls it) and syncrepl consumers can attach, as on a production OpenLDAP.
  ``syncprov=False`` leaves the module and the overlay out, as on a server nobody set up for replication.
* Rule 6: ``cn_config=True`` runs slapd from a ``slapd.d`` directory (``slapd -F``), the way Debian's slapd
  runs: ``slapd.conf`` is converted once (``slaptest``), and from then on the configuration is changed live
  through ``cn=config`` (:meth:`modify_config`, as ``cn=config`` with :attr:`config_password`), and those
  changes survive a restart (the passwords too: one object keeps its data directory's). The mdb database
  is ``olcDatabase={1}mdb,cn=config``, as on Debian.

``slapadd -q`` loads LDIF offline before :meth:`start`; :meth:`modify` applies live changes through
``ldapmodify`` as the rootdn. slapd keeps ``entryUUID`` across modrdn, so an anchor survives renames and
moves. back-mdb refuses an RDN longer than about 240 bytes of UTF-8 (MDB_BAD_VALSIZE from slapadd).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from provisioner.core.dn import parse_dn
from provisioner.embedded.ports import LOOPBACK, free_port, port_is_free
from provisioner.embedded.process import ChildProcess, Server
from provisioner.ldap_common import LDAP_NO_SUCH_OBJECT, LDAP_SUCCESS

__all__ = ["EmbeddedSlapd", "SlapdError", "SlapdNotInstalled"]

log = logging.getLogger(__name__)

SCHEMA_DIR = Path("/etc/ldap/schema")
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
MODULE_DIR = Path("/usr/lib/ldap")
INSTALL_HINT = "apt-get install slapd ldap-utils"
#: Where the Debian packages put the binaries when they are not on PATH (/usr/sbin often is not).
SEARCH_DIRS: tuple[Path, ...] = (Path("/usr/sbin"), Path("/usr/bin"))


class SlapdError(RuntimeError):
    """slapd could not be configured, loaded, started or changed; the message says what and where."""


class SlapdNotInstalled(SlapdError):
    """A slapd or ldap-utils binary is missing."""


def _find_binary(name: str) -> str:
    found = shutil.which(name) or next((str(d / name) for d in SEARCH_DIRS if (d / name).exists()), None)
    if found is None:
        raise SlapdNotInstalled(f"{name} not found: {INSTALL_HINT}")
    return found


def ssha(password: str) -> str:
    """``{SSHA}`` of ``password``, so no clear-text password is written into slapd.conf or the database."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _conf_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class EmbeddedSlapd(Server):
    """One slapd process on ``ldap://127.0.0.1:<port>`` with its own config and mdb database.

    Nothing runs until :meth:`start`; :meth:`load_ldif` must come before it.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        suffix: str = "dc=mos,dc=test",
        port: int | None = None,
        sizelimit: int = 500,
        paged_total_unlimited_for_service: bool = True,
        root_password: str | None = None,
        service_password: str | None = None,
        host: str = LOOPBACK,
        max_size_bytes: int = 4 << 30,
        start_timeout: float = 30.0,
        ppolicy: bool = False,
        syncprov: bool = True,
        cn_config: bool = False,
    ) -> None:
        parse_dn(suffix)  # a bad suffix fails here, not in slapd's log
        self.data_dir = Path(data_dir).resolve()
        self.suffix = suffix
        self.host = host
        self._port = port
        self.sizelimit = sizelimit
        self.paged_total_unlimited_for_service = paged_total_unlimited_for_service
        self.root_dn = f"cn=admin,{suffix}"
        self.service_dn = f"cn=provisioner,{suffix}"
        self.root_password = root_password or secrets.token_urlsafe(18)
        self.service_password = service_password or secrets.token_urlsafe(18)
        self.max_size_bytes = max_size_bytes
        self.start_timeout = start_timeout
        # The password-policy overlay: its pwdAccountLockedTime is the openldap preset's disabled flag.
        self.ppolicy = ppolicy
        self.syncprov = syncprov
        self.cn_config = cn_config
        self.config_password = secrets.token_urlsafe(18)
        self._child = ChildProcess("slapd")
        self._loads = 0

    # -- paths and addresses ---------------------------------------------------------------------------

    @property
    def conf_path(self) -> Path:
        return self.data_dir / "slapd.conf"

    @property
    def config_dir(self) -> Path:
        """``slapd.d``: the configuration slapd runs from in cn=config mode (Rule 6)."""
        return self.data_dir / "slapd.d"

    @property
    def db_dir(self) -> Path:
        return self.data_dir / "db"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "slapd.log"

    @property
    def root_password_file(self) -> Path:
        """The rootdn password, no trailing newline (``ldapsearch -y`` and ``bind_password_file`` read it)."""
        return self.data_dir / "root.pw"

    @property
    def config_password_file(self) -> Path:
        """The password of ``cn=config`` (the configuration's rootdn), no trailing newline."""
        return self.data_dir / "config.pw"

    @property
    def service_password_file(self) -> Path:
        """The service account's password, no trailing newline."""
        return self.data_dir / "service.pw"

    @property
    def port(self) -> int:
        if self._port is None:
            self._port = free_port(self.host)
        return self._port

    @property
    def uri(self) -> str:
        """``ldap://127.0.0.1:<port>``, without the trailing slash ldap3 refuses."""
        return f"ldap://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._child.is_running()

    @property
    def pid(self) -> int | None:
        return self._child.pid

    # -- configuration ---------------------------------------------------------------------------------

    def render_config(self) -> str:
        """The slapd.conf text (pure; :meth:`write_config` writes it)."""
        d = self.data_dir
        service = _conf_quote(self.service_dn)
        lines = [f"include {SCHEMA_DIR / s}.schema" for s in SCHEMAS]
        lines += [
            f"pidfile {d / 'slapd.pid'}",
            f"argsfile {d / 'slapd.args'}",
            f"modulepath {MODULE_DIR}",
            "moduleload back_mdb",
            *(["moduleload syncprov"] if self.syncprov else []),
            *(["moduleload ppolicy"] if self.ppolicy else []),
            f"sizelimit {self.sizelimit}",
            "",
            'access to dn.base="" by * read',
            'access to dn.base="cn=Subschema" by * read',
            "",
            # Before the mdb database, so that it is olcDatabase={1}mdb in cn=config mode, as on Debian.
            "database config",
            f"rootpw {ssha(self.config_password)}",
            "",
            "database mdb",
            f"suffix {_conf_quote(self.suffix)}",
            f"rootdn {_conf_quote(self.root_dn)}",
            f"rootpw {ssha(self.root_password)}",
            f"directory {self.db_dir}",
            f"maxsize {self.max_size_bytes}",
            # The data is disposable (tests, demo): skip fsync, as slapadd -q does.
            "dbnosync",
            "index objectClass eq",
            "index entryUUID eq",
            "index uid eq",
            "index employeeType eq",
            "index entryCSN eq",
        ]
        if self.paged_total_unlimited_for_service:
            # The soft/hard limits stay at sizelimit: only a paged search may read past it (Rule 2).
            lines.append(
                f"limits dn.exact={service} size.soft={self.sizelimit} size.hard={self.sizelimit} "
                "size.prtotal=unlimited"
            )
        lines += [
            "access to attrs=userPassword",
            "    by self write",
            "    by anonymous auth",
            "    by * none",
            "access to *",
            f"    by dn.exact={service} read",
            "    by users read",
            "    by * none",
            "",
            *(["overlay ppolicy"] if self.ppolicy else []),
        ]
        if self.syncprov:
            # Rule 5. Last: the directives after ``overlay`` configure the overlay, not the database.
            lines += ["overlay syncprov", "syncprov-checkpoint 100 1", ""]
        return "\n".join(lines)

    def write_config(self) -> None:
        """Write slapd.conf and the password files under ``data_dir``; idempotent."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.db_dir.mkdir(exist_ok=True)
        for path, secret in (
            (self.root_password_file, self.root_password),
            (self.service_password_file, self.service_password),
            (self.config_password_file, self.config_password),
        ):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(secret)
        fd = os.open(self.conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(self.render_config())

    def _convert(self) -> None:
        """Rule 6: slapd.conf becomes slapd.d once; afterwards slapd.d holds the live changes and stays."""
        if not self.cn_config or (self.config_dir / "cn=config.ldif").exists():
            return
        if not (self.db_dir / "data.mdb").exists():
            # slaptest opens the database read-only to check it, which needs one: an empty load makes it.
            empty = self.data_dir / "empty.ldif"
            empty.write_text("", encoding="utf-8")
            self._tool("slapadd", ["-q", "-f", str(self.conf_path), "-b", self.suffix, "-l", str(empty)])
        if self.config_dir.exists():
            shutil.rmtree(self.config_dir)
        self.config_dir.mkdir()
        self._tool("slaptest", ["-f", str(self.conf_path), "-F", str(self.config_dir)])

    def _tool(self, name: str, args: list[str]) -> None:
        result = subprocess.run([_find_binary(name), *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SlapdError(
                f"{name} {' '.join(args)} failed (exit {result.returncode}): {_tail(result.stderr, 4)}"
            )

    def _config_args(self) -> list[str]:
        converted = self.cn_config and (self.config_dir / "cn=config.ldif").exists()
        return ["-F", str(self.config_dir)] if converted else ["-f", str(self.conf_path)]

    # -- offline loading -------------------------------------------------------------------------------

    def load_ldif(self, source: str | Path, *, replace: bool = False) -> float:
        """Load LDIF offline with ``slapadd -q``; a ``Path`` (or a one-line str) is a file, else LDIF text.

        Must run before :meth:`start`. Entries are added to what the database holds; ``replace=True`` empties
        it first. Returns the seconds slapadd took.
        """
        if self.running:
            raise SlapdError(f"load_ldif needs slapd stopped ({self.uri}); use modify() for live changes")
        slapadd = _find_binary("slapadd")
        if replace and self.db_dir.exists():
            shutil.rmtree(self.db_dir)
        self.write_config()
        if isinstance(source, str) and "\n" in source:
            self._loads += 1
            path = self.data_dir / f"load-{self._loads}.ldif"
            path.write_text(source, encoding="utf-8")
        else:
            path = Path(source)
            if not path.is_file():
                raise SlapdError(f"LDIF file not found: {path}")
        started = time.perf_counter()
        result = subprocess.run(
            [slapadd, "-q", *self._config_args(), "-b", self.suffix, "-l", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        took = time.perf_counter() - started
        if result.returncode != 0:
            hint = (
                f" (the database in {self.db_dir} already holds it; replace=True starts afresh)"
                if "MDB_KEYEXIST" in result.stderr
                else ""
            )
            raise SlapdError(
                f"slapadd failed loading {path} (exit {result.returncode}){hint}: {_tail(result.stderr, 4)}"
            )
        log.info("slapadd loaded %s in %.2f s", path, took)
        return took

    # -- process ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start slapd and wait until the rootdn can bind; then make sure the service account exists."""
        if self.running:
            return
        slapd = _find_binary("slapd")
        for tool in ("ldapsearch", "ldapmodify", "ldapwhoami"):
            _find_binary(tool)
        self.write_config()
        self._convert()
        if not port_is_free(self.port, self.host):
            raise SlapdError(f"port {self.port} on {self.host} is in use; pass another port or none")
        # -d keeps slapd in the foreground (we own its pid) and sends its stats log to slapd.log.
        self._child.spawn([slapd, "-h", f"{self.uri}/", *self._config_args(), "-d", "stats"], self.log_path)
        probes: list[subprocess.CompletedProcess[str]] = []  # the last one, quoted on a timeout

        def bound() -> bool:
            probes[:] = [self._run(["ldapwhoami", *self._bind_args(root=True)], check=False)]
            return probes[0].returncode == LDAP_SUCCESS

        if not self._child.wait_ready(bound, time.monotonic() + self.start_timeout):
            code = self._child.returncode
            if code is not None:
                self._child.stop(0)
                raise SlapdError(f"slapd exited with {code} while starting on {self.uri}: {self.log_tail()}")
            self.kill()
            raise SlapdError(
                f"slapd did not answer a bind on {self.uri} within {self.start_timeout:.0f} s: "
                f"{probes[0].stderr.strip()} | {self.log_tail()}"
            )
        self._ensure_service_account()
        log.info("slapd %d listening on %s (data %s)", self.pid, self.uri, self.data_dir)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop slapd cleanly (SIGTERM), killing it if it does not exit within ``timeout``."""
        self._child.stop(timeout)

    def kill(self) -> None:
        """SIGKILL slapd, as an outage or a crash would (mdb survives it)."""
        self._child.stop(10.0, sig=signal.SIGKILL)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of slapd.log, for error messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no slapd.log)"
        return _tail(text, lines)

    # -- live changes and reads ------------------------------------------------------------------------

    def modify(self, ldif: str, *, relax: bool = False) -> None:
        """Apply change records (``changetype: add|modify|modrdn|moddn|delete``) live, as the rootdn.

        ``relax=True`` sends the Relax Rules control, which lets an add set ``entryUUID`` (a test can then
        predict the anchor of a person it adds).
        """
        self._require_running()
        args = ["ldapmodify", *self._bind_args(root=True)]
        if relax:
            args += ["-e", "relax"]
        result = self._run(args, input_text=ldif, check=False)
        if result.returncode != LDAP_SUCCESS:
            raise SlapdError(
                f"ldapmodify on {self.uri} failed (exit {result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )

    def modify_config(self, ldif: str) -> None:
        """Apply change records to ``cn=config`` live, bound as ``cn=config`` (cn=config mode, Rule 6)."""
        self._require_running()
        if not self.cn_config:
            raise SlapdError(f"slapd on {self.uri} runs from slapd.conf; modify_config needs cn_config=True")
        args = ["ldapmodify", "-x", "-H", self.uri, "-D", "cn=config", "-y", str(self.config_password_file)]
        result = self._run(args, input_text=ldif, check=False)
        if result.returncode != LDAP_SUCCESS:
            raise SlapdError(
                f"ldapmodify of cn=config on {self.uri} failed (exit {result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )

    def ldapsearch_args(
        self,
        filter_: str = "(objectClass=*)",
        attributes: Sequence[str] = (),
        *,
        base: str | None = None,
        page_size: int | None = None,
        as_root: bool = False,
    ) -> list[str]:
        """The ``ldapsearch`` command line for a search as the service account (or the rootdn).

        ``page_size`` adds ``-E pr=<n>/noprompt`` (RFC 2696 paging, every page fetched). The password is read
        from a file (``-y``), never passed on the command line. Benches time this C client side by side
        with the Python reader.
        """
        args = [
            _find_binary("ldapsearch"),
            "-LLL",
            "-o",
            "ldif-wrap=no",
            *self._bind_args(root=as_root),
            "-b",
            base or self.suffix,
        ]
        if page_size is not None:
            args += ["-E", f"pr={page_size}/noprompt"]
        return [*args, filter_, *attributes]

    def ldapsearch(
        self,
        filter_: str = "(objectClass=*)",
        attributes: Sequence[str] = (),
        *,
        base: str | None = None,
        page_size: int | None = None,
        as_root: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run :meth:`ldapsearch_args`; the exit code is the LDAP result code (4 = sizeLimitExceeded)."""
        self._require_running()
        args = self.ldapsearch_args(filter_, attributes, base=base, page_size=page_size, as_root=as_root)
        return subprocess.run(args, capture_output=True, text=True, check=False)

    # -- internals -------------------------------------------------------------------------------------

    def _bind_args(self, *, root: bool) -> list[str]:
        dn, pwfile = (
            (self.root_dn, self.root_password_file) if root else (self.service_dn, self.service_password_file)
        )
        return ["-x", "-H", self.uri, "-D", dn, "-y", str(pwfile)]

    def _run(
        self, args: list[str], *, input_text: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        args = [_find_binary(args[0]), *args[1:]]
        result = subprocess.run(args, input=input_text, capture_output=True, text=True, check=False)
        if check and result.returncode != LDAP_SUCCESS:
            raise SlapdError(
                f"{Path(args[0]).name} on {self.uri} failed (exit {result.returncode}): {result.stderr}"
            )
        return result

    def _require_running(self) -> None:
        if not self.running:
            raise SlapdError(f"slapd is not running (data {self.data_dir}); call start() first")

    def _ensure_service_account(self) -> None:
        """Rule 3: the service entry exists and has our password (idempotent; "already there" is success)."""
        base = self._run(
            ["ldapsearch", *self._bind_args(root=True), "-b", self.suffix, "-s", "base", "1.1"], check=False
        )
        if base.returncode == LDAP_NO_SUCH_OBJECT:
            first = parse_dn(self.suffix)[0][0]
            attrs = (
                f"objectClass: dcObject\nobjectClass: organization\ndc: {first.value}\no: {first.value}\n"
                if first.type == "dc"
                else f"objectClass: organizationalUnit\nou: {first.value}\n"
            )
            self.modify(f"dn: {self.suffix}\nchangetype: add\n{attrs}")
        elif base.returncode != LDAP_SUCCESS:
            raise SlapdError(f"cannot read the suffix {self.suffix} on {self.uri}: {base.stderr.strip()}")
        hashed = ssha(self.service_password)
        change = f"dn: {self.service_dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: {hashed}\n"
        result = self._run(["ldapmodify", *self._bind_args(root=True)], input_text=change, check=False)
        if result.returncode == LDAP_NO_SUCH_OBJECT:
            self.modify(
                f"dn: {self.service_dn}\nchangetype: add\nobjectClass: organizationalRole\n"
                f"objectClass: simpleSecurityObject\ncn: provisioner\nuserPassword: {hashed}\n"
            )
        elif result.returncode != LDAP_SUCCESS:
            raise SlapdError(f"cannot set the password of {self.service_dn}: {result.stderr.strip()}")


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty)"
