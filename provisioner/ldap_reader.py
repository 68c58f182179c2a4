"""Reading the directory with ldap3: bind, paged search, and an honest word on whether the read is complete.

The only module of the provisioner that talks LDAP. Every ldap3 call blocks, so :func:`read_directory` runs
the whole read in a worker thread. A read that stops early (size or time limit, lost connection) is returned
with ``complete=False`` and the reason: the sync must never take missing entries for leavers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import ldap3
from ldap3.core import exceptions as lex
from ldap3.utils.conv import escape_filter_chars

from provisioner.config import DirectoryConfig
from provisioner.directory import ReadResult
from provisioner.model import RawEntry

log = logging.getLogger(__name__)

_BINARY_ANCHORS = frozenset({"objectguid", "msds-consistencyguid"})
_RESULT_SIZE_LIMIT = 4
_RESULT_TIME_LIMIT = 3
_RESULT_ADMIN_LIMIT = 11
_RESULT_NO_SUCH_OBJECT = 32
_RESULT_INVALID_CREDENTIALS = 49


class DirectoryError(Exception):
    """The directory could not be read at all; the message says what to check."""


class DirectoryUnreachable(DirectoryError):
    pass


class DirectoryAuthError(DirectoryError):
    pass


class DirectoryConfigError(DirectoryError):
    """The server answered, but the configured base DN or filter does not fit it."""


@dataclass(frozen=True, slots=True)
class _Page:
    entries: list[RawEntry]
    stop_reason: str | None


def login_filter(cfg: DirectoryConfig, login: str) -> str:
    """The filter that finds one person by login, the value escaped per RFC 4515."""
    return f"(&{cfg.filter}({cfg.attributes.login}={escape_filter_chars(login)}))"


def _decode(name: str, value: bytes) -> str:
    if name in _BINARY_ANCHORS and len(value) == 16:
        # AD stores GUIDs little-endian in the first three fields; this is the form AD tools print.
        return str(uuid.UUID(bytes_le=value))
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.hex()


def _person_attributes(cfg: DirectoryConfig) -> list[str]:
    a = cfg.attributes
    names = [
        a.anchor, a.login, a.display_name, a.common_name, a.surname, a.given_name, a.title,
        a.department, a.phone, a.email, a.manager,
    ]  # fmt: skip
    return sorted({n for n in names if n})


class DirectoryReader:
    """One connection to the directory. Use as a context manager; every method blocks."""

    def __init__(self, cfg: DirectoryConfig) -> None:
        self.cfg = cfg
        tls = None
        if cfg.uri.startswith("ldaps://") or cfg.start_tls:
            tls = ldap3.Tls(
                validate=ssl.CERT_REQUIRED, ca_certs_file=cfg.ca_file, version=ssl.PROTOCOL_TLS_CLIENT
            )
        self.server = ldap3.Server(cfg.uri, get_info=ldap3.NONE, connect_timeout=cfg.timeout_seconds, tls=tls)
        self.conn: ldap3.Connection | None = None

    def __enter__(self) -> DirectoryReader:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        cfg = self.cfg
        # check_names=False and no schema: ldap3's schema-driven formatting costs more than the network.
        conn = ldap3.Connection(
            self.server,
            user=cfg.bind_dn,
            password=cfg.bind_password,
            read_only=True,
            raise_exceptions=False,
            receive_timeout=int(cfg.timeout_seconds),  # ldap3 packs it into a C struct: whole seconds
            check_names=False,
            auto_range=True,
        )
        try:
            conn.open()
            if cfg.start_tls:
                conn.start_tls()
        except lex.LDAPException as e:
            raise DirectoryUnreachable(f"cannot reach the directory at {cfg.uri}: {e}") from None
        try:
            ok = conn.bind()
        except lex.LDAPException as e:
            raise DirectoryUnreachable(f"directory at {cfg.uri} dropped the bind: {e}") from None
        if not ok:
            code = conn.result.get("result")
            desc = conn.result.get("description")
            if code == _RESULT_INVALID_CREDENTIALS:
                raise DirectoryAuthError(
                    f"the directory refused the bind as {cfg.bind_dn}: wrong DN or password "
                    "(check directory.bind_dn and directory.bind_password_file)"
                )
            raise DirectoryAuthError(f"the directory refused the bind as {cfg.bind_dn}: {desc} ({code})")
        self.conn = conn
        self._check_base()

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(lex.LDAPException):
                self.conn.unbind()
            self.conn = None

    def _check_base(self) -> None:
        assert self.conn is not None
        try:
            self.conn.search(self.cfg.base_dn, "(objectClass=*)", ldap3.BASE, attributes=["1.1"])
        except lex.LDAPException as e:
            raise DirectoryUnreachable(f"the directory closed the connection: {e}") from None
        code = self.conn.result.get("result")
        if code == _RESULT_NO_SUCH_OBJECT:
            raise DirectoryConfigError(
                f"base DN {self.cfg.base_dn!r} does not exist in the directory (check directory.base_dn)"
            )
        if code not in (0, None):
            desc = self.conn.result.get("description")
            raise DirectoryConfigError(f"cannot read base DN {self.cfg.base_dn!r}: {desc} ({code})")

    def _paged(self, flt: str, attributes: Sequence[str]) -> Iterator[_Page]:
        """Yield pages; the last page carries the reason the read stopped early, if it did."""
        assert self.conn is not None
        conn = self.conn
        cookie: Any = None
        wanted = {a.lower() for a in attributes}
        total = 0
        while True:
            try:
                conn.search(
                    self.cfg.base_dn,
                    flt,
                    ldap3.SUBTREE,
                    attributes=list(attributes),
                    paged_size=self.cfg.page_size,
                    paged_cookie=cookie,
                    time_limit=0,
                )
            except lex.LDAPInvalidFilterError as e:
                raise DirectoryConfigError(f"invalid LDAP filter {flt!r}: {e}") from None
            except lex.LDAPException as e:
                yield _Page([], f"connection lost after {total} entries: {e}")
                return
            entries: list[RawEntry] = []
            for item in conn.response or ():
                if item.get("type") != "searchResEntry":
                    continue
                raw = item.get("raw_attributes") or {}
                attrs = {
                    k.lower(): tuple(_decode(k.lower(), v) for v in vals)
                    for k, vals in raw.items()
                    if k.lower() in wanted and vals
                }
                entries.append(RawEntry(item["dn"], attrs))
            total += len(entries)
            code = conn.result.get("result")
            if code == _RESULT_SIZE_LIMIT:
                yield _Page(entries, f"the server's size limit stopped the read after {total} entries")
                return
            if code == _RESULT_TIME_LIMIT:
                yield _Page(entries, f"the server's time limit stopped the read after {total} entries")
                return
            if code == _RESULT_ADMIN_LIMIT:
                yield _Page(entries, f"an administrative limit stopped the read after {total} entries")
                return
            if code == _RESULT_NO_SUCH_OBJECT:
                raise DirectoryConfigError(f"base DN {self.cfg.base_dn!r} does not exist in the directory")
            if code not in (0, None):
                desc = conn.result.get("description")
                if total == 0 and code in (2, 53, 87):
                    raise DirectoryConfigError(f"the directory rejected the search {flt!r}: {desc} ({code})")
                yield _Page(entries, f"the search failed after {total} entries: {desc} ({code})")
                return
            controls = conn.result.get("controls") or {}
            paged = controls.get("1.2.840.113556.1.4.319", {}).get("value", {})
            cookie = paged.get("cookie")
            yield _Page(entries, None)
            if not cookie:
                return

    def search_all(self, flt: str, attributes: Sequence[str]) -> tuple[list[RawEntry], str | None]:
        out: list[RawEntry] = []
        reason: str | None = None
        for page in self._paged(flt, attributes):
            out.extend(page.entries)
            reason = page.stop_reason
        return out, reason

    def read(self) -> ReadResult:
        cfg = self.cfg
        people, reason = self.search_all(cfg.filter, _person_attributes(cfg))
        if not people and reason is None:
            raise DirectoryConfigError(
                f"the filter {cfg.filter} matched no entries under {cfg.base_dn} "
                "(check directory.filter and directory.base_dn)"
            )
        units: list[RawEntry] = []
        if cfg.department_from == "dn" and cfg.unit_filter and reason is None:
            units, unit_reason = self.search_all(cfg.unit_filter, [cfg.attributes.anchor])
            if unit_reason:
                # Units only give stable keys; without them keys fall back to paths. Not fatal, but said.
                log.warning("reading units stopped early (%s); unit keys fall back to paths", unit_reason)
                units = []
        disabled: list[RawEntry] = []
        if cfg.disabled_filter and reason is None:
            disabled, dis_reason = self.search_all(f"(&{cfg.filter}{cfg.disabled_filter})", ["1.1"])
            if dis_reason:
                # Not knowing who is disabled is as dangerous as not knowing who left: mark incomplete.
                reason = f"reading disabled accounts: {dis_reason}"
        return ReadResult(
            people=people,
            units=units,
            disabled_dns=frozenset(e.dn for e in disabled),
            complete=reason is None,
            stop_reason=reason,
        )


def read_directory_sync(cfg: DirectoryConfig) -> ReadResult:
    with DirectoryReader(cfg) as reader:
        return reader.read()


async def read_directory(cfg: DirectoryConfig) -> ReadResult:
    """Read the whole directory off the event loop (ldap3 blocks)."""
    return await asyncio.to_thread(read_directory_sync, cfg)
