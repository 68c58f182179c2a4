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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ldap3
from ldap3.core import exceptions as lex

from provisioner.config import DirectoryConfig, GroupsConfig
from provisioner.core.directory import ReadResult
from provisioner.core.groups import GroupError, GroupRead, member_dns, norm
from provisioner.core.model import RawEntry
from provisioner.ldap_common import (
    BINARY_ANCHORS,
    LDAP_ADMINLIMIT_EXCEEDED,
    LDAP_INVALID_CREDENTIALS,
    LDAP_NO_SUCH_OBJECT,
    LDAP_SIZELIMIT_EXCEEDED,
    LDAP_TIMELIMIT_EXCEEDED,
    decode_value,
    escape_value,
    person_filter,
)

log = logging.getLogger(__name__)


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


def _lean_entries(conn: ldap3.Connection) -> None:
    """Make this connection hand over search entries as raw bytes, skipping ldap3's per-value conversion.

    ldap3 turns every value into text twice (``attributes`` through its config-driven ``to_unicode`` and
    ``raw_attributes`` into a case-insensitive dict): at 25,000 entries that costs several times what the C
    client ``ldapsearch`` needs for the whole read. Only the raw bytes are used here, so entries are built
    from the BER structure ldap3's fast decoder already produced; every other message keeps ldap3's path.
    The override is per connection (an instance attribute), never a global patch.
    """
    strategy = conn.strategy
    original = strategy.decode_response_fast

    def decode(message: dict[str, Any]) -> dict[str, Any]:
        if message.get("protocolOp") != 4 or message.get("controls"):
            return original(message)  # type: ignore[no-any-return]
        payload = message["payload"]
        attrs: dict[str, list[bytes]] = {}
        for attribute in payload[1][3]:
            values = attribute[3][1][3]
            if values:
                attrs[bytes(attribute[3][0][3]).decode("utf-8").lower()] = [bytes(v[3]) for v in values]
        return {
            "type": "searchResEntry",
            "dn": bytes(payload[0][3]).decode("utf-8"),
            "raw_attributes": attrs,
            "attributes": {},
        }

    strategy.decode_response_fast = decode


def login_filter(cfg: DirectoryConfig, login: str) -> str:
    """The filter that finds one person by login, the value escaped per RFC 4515."""
    return person_filter(cfg.filter, cfg.attributes.login, login)


def _person_attributes(cfg: DirectoryConfig) -> list[str]:
    a = cfg.attributes
    names = [
        a.anchor, a.login, a.display_name, a.common_name, a.surname, a.given_name, a.title,
        a.department, a.phone, a.mobile, a.email, a.manager,
    ]  # fmt: skip
    return sorted({n for n in names if n})


class _Ldap3Backend:
    """The pure-Python client: works everywhere ldap3 installs; about 3x slower than libldap on big reads."""

    def __init__(self, cfg: DirectoryConfig) -> None:
        self.cfg = cfg
        tls = None
        if cfg.uri.startswith("ldaps://") or cfg.start_tls:
            tls = ldap3.Tls(
                validate=ssl.CERT_REQUIRED, ca_certs_file=cfg.ca_file, version=ssl.PROTOCOL_TLS_CLIENT
            )
        self.server = ldap3.Server(cfg.uri, get_info=ldap3.NONE, connect_timeout=cfg.timeout_seconds, tls=tls)
        self.conn: ldap3.Connection | None = None

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
            if code == LDAP_INVALID_CREDENTIALS:
                raise DirectoryAuthError(
                    f"the directory refused the bind as {cfg.bind_dn}: wrong DN or password "
                    "(check directory.bind_dn and directory.bind_password_file)"
                )
            raise DirectoryAuthError(f"the directory refused the bind as {cfg.bind_dn}: {desc} ({code})")
        _lean_entries(conn)
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
        if code == LDAP_NO_SUCH_OBJECT:
            raise DirectoryConfigError(
                f"base DN {self.cfg.base_dn!r} does not exist in the directory (check directory.base_dn)"
            )
        if code not in (0, None):
            desc = self.conn.result.get("description")
            raise DirectoryConfigError(f"cannot read base DN {self.cfg.base_dn!r}: {desc} ({code})")

    def paged(
        self, flt: str, attributes: Sequence[str], base: str | None = None, *, one: bool = False
    ) -> Iterator[_Page]:
        """Yield pages; the last page carries the reason the read stopped early, if it did.

        ``base``: search there instead of the base DN; ``one``: that entry only, and none if it is missing.
        """
        assert self.conn is not None
        conn = self.conn
        cookie: Any = None
        wanted = {a.lower() for a in attributes}
        total = 0
        while True:
            try:
                conn.search(
                    base or self.cfg.base_dn,
                    flt,
                    ldap3.BASE if one else ldap3.SUBTREE,
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
                attrs: dict[str, tuple[str, ...]] = {}
                for k, vals in raw.items():
                    name = k.lower()
                    # "member;range=0-1499" is kept: a partial member list must be seen as partial.
                    if (name in wanted or name.split(";", 1)[0] in wanted) and vals:
                        attrs[name] = tuple(decode_value(name, v) for v in vals)
                entries.append(RawEntry(item["dn"], attrs))
            total += len(entries)
            code = conn.result.get("result")
            if code == LDAP_SIZELIMIT_EXCEEDED:
                yield _Page(entries, f"the server's size limit stopped the read after {total} entries")
                return
            if code == LDAP_TIMELIMIT_EXCEEDED:
                yield _Page(entries, f"the server's time limit stopped the read after {total} entries")
                return
            if code == LDAP_ADMINLIMIT_EXCEEDED:
                yield _Page(entries, f"an administrative limit stopped the read after {total} entries")
                return
            if code == LDAP_NO_SUCH_OBJECT:
                if one:
                    yield _Page([], None)
                    return
                raise DirectoryConfigError(
                    f"base DN {base or self.cfg.base_dn!r} does not exist in the directory"
                )
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


class PythonLdapBackend:
    """libldap through python-ldap: the C decoder reads 25,000 entries about as fast as ``ldapsearch``."""

    def __init__(self, cfg: DirectoryConfig) -> None:
        self.cfg = cfg
        self.conn: Any = None

    def open(self) -> None:
        import ldap

        cfg = self.cfg
        try:
            conn = ldap.initialize(cfg.uri, bytes_mode=False)
            conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
            # AD answers with referrals to other naming contexts; chasing them would bind elsewhere.
            conn.set_option(ldap.OPT_REFERRALS, 0)
            conn.set_option(ldap.OPT_NETWORK_TIMEOUT, cfg.timeout_seconds)
            conn.set_option(ldap.OPT_TIMEOUT, cfg.timeout_seconds)
            if cfg.uri.startswith("ldaps://") or cfg.start_tls:
                conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
                if cfg.ca_file:
                    conn.set_option(ldap.OPT_X_TLS_CACERTFILE, cfg.ca_file)
                conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
            if cfg.start_tls:
                conn.start_tls_s()
            conn.simple_bind_s(cfg.bind_dn, cfg.bind_password)
        except ldap.INVALID_CREDENTIALS:
            raise DirectoryAuthError(
                f"the directory refused the bind as {cfg.bind_dn}: wrong DN or password "
                "(check directory.bind_dn and directory.bind_password_file)"
            ) from None
        except (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.CONNECT_ERROR) as e:
            raise DirectoryUnreachable(f"cannot reach the directory at {cfg.uri}: {_ldap_desc(e)}") from None
        except ldap.LDAPError as e:
            raise DirectoryAuthError(
                f"the directory refused the bind as {cfg.bind_dn}: {_ldap_desc(e)}"
            ) from None
        self.conn = conn
        try:
            conn.search_s(cfg.base_dn, ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"])
        except ldap.NO_SUCH_OBJECT:
            raise DirectoryConfigError(
                f"base DN {cfg.base_dn!r} does not exist in the directory (check directory.base_dn)"
            ) from None
        except ldap.SERVER_DOWN as e:
            raise DirectoryUnreachable(f"the directory closed the connection: {_ldap_desc(e)}") from None
        except ldap.LDAPError as e:
            raise DirectoryConfigError(f"cannot read base DN {cfg.base_dn!r}: {_ldap_desc(e)}") from None

    def close(self) -> None:
        if self.conn is not None:
            import ldap

            with contextlib.suppress(ldap.LDAPError):
                self.conn.unbind_s()
            self.conn = None

    def paged(
        self, flt: str, attributes: Sequence[str], base: str | None = None, *, one: bool = False
    ) -> Iterator[_Page]:
        import ldap
        from ldap.controls import SimplePagedResultsControl

        assert self.conn is not None
        control = SimplePagedResultsControl(True, size=self.cfg.page_size, cookie="")
        wanted = [a for a in attributes]
        total = 0
        while True:
            try:
                msgid = self.conn.search_ext(
                    base or self.cfg.base_dn,
                    ldap.SCOPE_BASE if one else ldap.SCOPE_SUBTREE,
                    flt,
                    wanted,
                    serverctrls=[control],
                )
                _rtype, data, _msgid, controls = self.conn.result3(msgid)
            except ldap.FILTER_ERROR:
                raise DirectoryConfigError(f"invalid LDAP filter {flt!r}") from None
            except ldap.NO_SUCH_OBJECT:
                if one:
                    yield _Page([], None)
                    return
                raise DirectoryConfigError(
                    f"base DN {base or self.cfg.base_dn!r} does not exist in the directory"
                ) from None
            except ldap.SIZELIMIT_EXCEEDED:
                yield _Page([], f"the server's size limit stopped the read after {total} entries")
                return
            except ldap.TIMELIMIT_EXCEEDED:
                yield _Page([], f"the server's time limit stopped the read after {total} entries")
                return
            except ldap.ADMINLIMIT_EXCEEDED:
                yield _Page([], f"an administrative limit stopped the read after {total} entries")
                return
            except (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.CONNECT_ERROR) as e:
                yield _Page([], f"connection lost after {total} entries: {_ldap_desc(e)}")
                return
            except ldap.LDAPError as e:
                if total == 0 and isinstance(e, ldap.UNWILLING_TO_PERFORM | ldap.PROTOCOL_ERROR):
                    raise DirectoryConfigError(
                        f"the directory rejected the search {flt!r}: {_ldap_desc(e)}"
                    ) from None
                yield _Page([], f"the search failed after {total} entries: {_ldap_desc(e)}")
                return
            entries: list[RawEntry] = []
            for dn, attrs in data:
                if dn is None:  # a search reference (AD), not an entry
                    continue
                entries.append(RawEntry(dn, _decode_attrs(attrs)))
            total += len(entries)
            cookie = next((c.cookie for c in controls if c.controlType == control.controlType), None)
            yield _Page(entries, None)
            if not cookie:
                return
            control.cookie = cookie


def _decode_attrs(attrs: dict[str, list[bytes]]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for key, values in attrs.items():
        name = key.lower()
        if name not in BINARY_ANCHORS:
            try:
                out[name] = tuple([v.decode("utf-8") for v in values])
                continue
            except UnicodeDecodeError:
                pass
        out[name] = tuple(decode_value(name, v) for v in values)
    return out


def _ldap_desc(e: Exception) -> str:
    info = e.args[0] if e.args and isinstance(e.args[0], dict) else {}
    text = info.get("desc") or str(e)
    if info.get("info"):
        text += f" ({info['info']})"
    return str(text)


def _backend(cfg: DirectoryConfig) -> _Ldap3Backend | PythonLdapBackend:
    if cfg.client == "ldap3":
        return _Ldap3Backend(cfg)
    try:
        import ldap  # noqa: F401
    except ImportError:
        if cfg.client == "python-ldap":
            raise DirectoryError("directory.client is python-ldap but python-ldap is not installed") from None
        return _Ldap3Backend(cfg)
    return PythonLdapBackend(cfg)


class DirectoryReader:
    """One connection to the directory. Use as a context manager; every method blocks.

    The client library is chosen by ``directory.client``: ``auto`` takes python-ldap (libldap's C decoder,
    within 2x of ``ldapsearch`` at 25,000 entries) when it is installed, else ldap3 (pure Python, ~3x slower).
    """

    def __init__(self, cfg: DirectoryConfig) -> None:
        self.cfg = cfg
        self.backend = _backend(cfg)

    def __enter__(self) -> DirectoryReader:
        self.backend.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.backend.close()

    def _paged(
        self, flt: str, attributes: Sequence[str], base: str | None = None, *, one: bool = False
    ) -> Iterator[_Page]:
        return self.backend.paged(flt, attributes, base, one=one)

    def search_all(
        self, flt: str, attributes: Sequence[str], base: str | None = None, *, one: bool = False
    ) -> tuple[list[RawEntry], str | None]:
        out: list[RawEntry] = []
        reason: str | None = None
        for page in self._paged(flt, attributes, base, one=one):
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
        groups = GroupRead()
        if cfg.groups is not None and reason is None:
            groups, reason = _GroupReader(self, cfg.groups, {norm(e.dn) for e in people}).read()
        return ReadResult(
            people=people,
            units=units,
            disabled_dns=frozenset(e.dn for e in disabled),
            complete=reason is None,
            stop_reason=reason,
            groups=groups,
        )


class _GroupReader:
    """The groups the config maps, and (client nesting) the groups nested in them, level by level."""

    def __init__(self, reader: DirectoryReader, cfg: GroupsConfig, person_dns: set[str]) -> None:
        self.reader, self.cfg, self.person_dns = reader, cfg, person_dns
        self.attributes = sorted({reader.cfg.attributes.anchor, cfg.name_attribute, *cfg.member_attributes})
        self.entries: dict[str, RawEntry] = {}
        self.reason: str | None = None

    def _search(self, flt: str, base: str | None, *, one: bool = False) -> list[RawEntry]:
        found, why = self.reader.search_all(flt, self.attributes, base, one=one)
        if why and self.reason is None:
            # Members not read are not members who left: the run holds its removals.
            self.reason = f"reading groups: {why}"
        return found

    def read(self) -> tuple[GroupRead, str | None]:
        selected: dict[str, list[int]] = {}
        for sel in self.cfg.selectors:
            if sel.dn is not None:
                found = self._search(self.cfg.object_filter, sel.dn, one=True)
                if not found:
                    raise GroupError(
                        f"{sel.key}.dn: {sel.dn} does not exist in the directory, or is not a group "
                        f"(groups.object_filter {self.cfg.object_filter})"
                    )
            else:
                flt = f"(&{self.cfg.object_filter}{sel.filter or ''})"
                try:
                    found = self._search(flt, sel.base)
                except DirectoryConfigError as e:
                    raise GroupError(f"{sel.key}: {e}") from None
                if not found:
                    log.warning("%s selects no group (%s under %s)", sel.key, flt, sel.base or "the base DN")
            for group in found:
                self.entries[norm(group.dn)] = group
                selected.setdefault(norm(group.dn), []).append(sel.rule.index)
        server = self._server_members(selected) if self.cfg.nesting == "server" else None
        if self.cfg.nesting == "client":
            self._nested()
        read = GroupRead(
            entries=tuple(self.entries.values()),
            selected={dn: tuple(ix) for dn, ix in selected.items()},
            server_members=server,
        )
        return read, self.reason

    def _nested(self) -> None:
        """Groups named as members, one level at a time, one level past max_depth so that the core sees
        (and names) a nesting too deep rather than members silently missing."""
        tried: set[str] = set(self.entries)
        level = list(self.entries.values())
        for _ in range(self.cfg.max_depth + 1):
            wanted = {
                norm(v): v
                for e in level
                for v in member_dns(e, self.cfg.member_attributes)
                if norm(v) not in self.person_dns and norm(v) not in tried
            }
            tried |= set(wanted)
            level = [
                e for dn in sorted(wanted) for e in self._search(self.cfg.object_filter, wanted[dn], one=True)
            ]
            for e in level:
                self.entries[norm(e.dn)] = e
            if not level:
                return

    def _server_members(self, selected: Mapping[str, list[int]]) -> dict[str, tuple[str, ...]]:
        """Every member of each mapped group, nested ones included, resolved by the server (Active
        Directory's LDAP_MATCHING_RULE_IN_CHAIN): no member attribute is read, so no ranged reads either."""
        people = self.reader.cfg.filter
        out: dict[str, tuple[str, ...]] = {}
        for dn in selected:
            entry_dn = self.entries[dn].dn
            flt = f"(&{people}(memberOf:1.2.840.113556.1.4.1941:={escape_value(entry_dn)}))"
            found, why = self.reader.search_all(flt, ["1.1"])
            if why and self.reason is None:
                self.reason = f"reading the members of {entry_dn}: {why}"
            out[dn] = tuple(e.dn for e in found)
        return out


def read_directory_sync(cfg: DirectoryConfig) -> ReadResult:
    with DirectoryReader(cfg) as reader:
        return reader.read()


async def read_directory(cfg: DirectoryConfig) -> ReadResult:
    """Read the whole directory off the event loop (ldap3 blocks)."""
    return await asyncio.to_thread(read_directory_sync, cfg)
