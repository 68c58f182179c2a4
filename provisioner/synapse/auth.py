"""Directory login: a Synapse module that checks ``m.login.password`` against LDAP.

Wired into ``homeserver.yaml`` as::

    modules:
      - module: provisioner.synapse.auth.DirectoryAuthProvider
        config: {uri: ..., bind_dn: ..., bind_password_file: ..., base_dn: ..., filter: ...,
                 login_attribute: uid, anchor_attribute: entryUUID, disabled_filter: ..., start_tls: false,
                 timeout: 10}

:func:`module_config_from` writes that ``config`` mapping from the provisioner's own config, so the login
rule and the sync rule are one rule. It replaces ``matrix-synapse-ldap3``, which keys accounts on the login
and would give a renamed or collision-suffixed person a second account.

Rules (each tested in tests/test_directory_login.py):

1. Synapse hands the callback the identifier exactly as typed (``ivanov.ii``, ``IVANOV.II``,
   ``@ivanov.ii:server``, ``смирнов.ав``); the module finds the person by login (equality in LDAP ignores
   case), and, when no login matches, by the account of that name: its ``civmatrix`` external id is the
   person's anchor. So a collided (``smirnov.av-1a2b3c``) or renamed person can also type their Matrix ID,
   which is what user-interactive auth (re-authentication in Element) sends.
2. The person must be exactly one entry under ``filter``, not match ``disabled_filter``, not lie in an
   ``out_of_scope`` DN (the sync's ``directory.exclude`` and ``directory.leavers``: an account made there
   would be in no registry, so no sync would ever lock it), and bind with the given password. An empty
   password is refused before LDAP is asked: a simple bind with a DN and no
   password is an *unauthenticated* bind, which servers answer with success.
3. The account is found by the external id ``("civmatrix", anchor)`` that the provisioner writes, never by
   the login. A person with no account yet (logging in before the sync) gets one at
   ``base_localpart(login)``, linked to the anchor *before* it is registered, so a crash in between leaves a
   link that the next login completes, and two concurrent logins cannot make two accounts.
4. The module never creates an account the provisioner would not adopt: when the base localpart is taken
   (by an account, a link, or another person whose login is exactly that localpart), the login is refused
   with the reason logged; the next sync creates the account with its collision rule.
5. Locked and deactivated accounts are refused by Synapse itself after the module answers
   (``LoginRestServlet._complete_login``: ``M_USER_LOCKED`` / ``M_USER_DEACTIVATED``).
6. Passwords are never logged; a refusal is logged with the login and the reason only.
7. Input that no directory login can be — a login with control or invisible formatting characters, a
   password with control characters (NUL above all), a login over :data:`MAX_LOGIN_LENGTH` or a password
   over :data:`MAX_PASSWORD_LENGTH` characters — is refused before the directory or the database is asked
   (:func:`input_refusal`). With Synapse's local passwords off (``password_config.localdb_enabled:
   false``) nothing runs after the module, so a refusal is always ``403 M_FORBIDDEN``, never a 500.

ldap3 blocks, so every directory call runs in Synapse's thread pool (``ModuleApi.defer_to_thread``).
Synapse is imported lazily: :func:`module_config_from` and the pure helpers work without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import ssl
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ldap3
from ldap3.core import exceptions as lex

from bridge.matrix.contract import EXTERNAL_ID_PROVIDER
from bridge.matrix.secrets import SecretError, read_secret
from provisioner.config import Config, ConfigError
from provisioner.core.dn import DNError, Subtrees
from provisioner.core.identity import base_localpart, clean_text, is_valid_localpart
from provisioner.ldap_common import (
    LDAP_INVALID_CREDENTIALS,
    LDAP_NO_SUCH_OBJECT,
    LDAP_SIZELIMIT_EXCEEDED,
    LDAP_SUCCESS,
    decode_value,
    is_filter,
)
from provisioner.ldap_common import anchor_filter as _anchor_filter
from provisioner.ldap_common import person_filter as _person_filter

if TYPE_CHECKING:
    from synapse.module_api import ModuleApi
    from synapse.storage.database import LoggingTransaction

log = logging.getLogger(__name__)

LOGIN_TYPE = "m.login.password"

# Longer than any login a directory issues (AD: 20 for sAMAccountName, 256 for a UPN) or any password it
# accepts (AD: 256), with room to spare; anything longer is an attack on the module, not a person.
MAX_LOGIN_LENGTH = 256
MAX_PASSWORD_LENGTH = 1024
_MAX_MATCHES = 10
_KEYS = {
    "uri", "bind_dn", "bind_password_file", "bind_password_env", "base_dn", "filter", "login_attribute",
    "anchor_attribute", "disabled_filter", "start_tls", "timeout", "ca_file", "out_of_scope",
}  # fmt: skip

CheckAuthResult = tuple[str, Callable[[Any], Awaitable[None]] | None] | None


# --------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModuleConfig:
    """The module's settings, parsed once by :meth:`DirectoryAuthProvider.parse_config`."""

    uri: str
    bind_dn: str
    bind_password: str = field(repr=False)
    base_dn: str
    filter: str
    login_attribute: str
    anchor_attribute: str
    disabled_filter: str | None
    start_tls: bool
    timeout: float
    ca_file: str | None = None
    # directory.exclude + directory.leavers: nobody in them logs in (a first login would make an account
    # the sync never locks, since it is not in the sync's registry).
    out_of_scope: tuple[str, ...] = ()


def parse_module_config(raw: Mapping[str, Any], *, environ: Mapping[str, str] | None = None) -> ModuleConfig:
    """Validate the ``config:`` mapping of the module; raises :class:`ConfigError` naming the key.

    The service account's password comes from ``bind_password_file`` (or ``bind_password_env``), never
    from the config itself.
    """
    where = "modules[DirectoryAuthProvider].config"
    if not isinstance(raw, Mapping):
        raise ConfigError("must be a mapping", where)
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(f"unknown key (known: {', '.join(sorted(_KEYS))})", where, unknown[0])

    def text(key: str, *, required: bool = True) -> str | None:
        value = raw.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise ConfigError("is required", where, key)
            return None
        if not isinstance(value, str):
            raise ConfigError(f"must be a string, not {type(value).__name__}", where, key)
        return value.strip()

    uri = text("uri") or ""
    if not re.match(r"^ldaps?://[^/\s]+/?$", uri):
        raise ConfigError(f"must look like ldap://host:port or ldaps://host:port, not {uri!r}", where, "uri")
    flt = text("filter") or ""
    disabled = text("disabled_filter", required=False)
    for key, value in (("filter", flt), ("disabled_filter", disabled)):
        if value is not None and not is_filter(value):
            raise ConfigError(f"is not an LDAP filter (RFC 4515): {value!r}", where, key)
    if "bind_password" in raw:
        raise ConfigError("secrets are never written in the config: use bind_password_file", where,
                          "bind_password")  # fmt: skip
    file_key, env_key = raw.get("bind_password_file"), raw.get("bind_password_env")
    if bool(file_key) == bool(env_key):
        raise ConfigError("exactly one of bind_password_file and bind_password_env is required", where,
                          "bind_password_file")  # fmt: skip
    try:
        if file_key:
            password = read_secret(file=text("bind_password_file") or "")
        else:
            password = read_secret(env=text("bind_password_env") or "", environ=environ)
    except SecretError as e:
        raise ConfigError(e.message, where, f"bind_password_{e.source}") from None
    start_tls = raw.get("start_tls", False)
    if not isinstance(start_tls, bool):
        raise ConfigError(f"must be true or false, not {start_tls!r}", where, "start_tls")
    scope_raw = raw.get("out_of_scope") or []
    if not isinstance(scope_raw, list) or not all(isinstance(x, str) for x in scope_raw):
        raise ConfigError("must be a list of DNs", where, "out_of_scope")
    try:
        Subtrees(scope_raw)
    except DNError as e:
        raise ConfigError(f"is not a list of valid DNs: {e}", where, "out_of_scope") from None
    timeout = raw.get("timeout", 10)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 1 <= timeout <= 300:
        raise ConfigError(f"must be a number of seconds between 1 and 300, not {timeout!r}", where, "timeout")
    return ModuleConfig(
        uri=uri.rstrip("/"),
        bind_dn=text("bind_dn") or "",
        bind_password=password,
        base_dn=text("base_dn") or "",
        filter=flt,
        login_attribute=text("login_attribute") or "",
        anchor_attribute=text("anchor_attribute") or "",
        disabled_filter=disabled,
        start_tls=start_tls,
        timeout=float(timeout),
        ca_file=text("ca_file", required=False),
        out_of_scope=tuple(scope_raw),
    )


def module_config_from(cfg: Config) -> dict[str, Any]:
    """The module's ``config:`` mapping for ``homeserver.yaml``, taken from the provisioner's config.

    Same directory, filter, disabled rule, login and anchor attributes as the sync. The secret is passed
    by reference (the absolute path of ``directory.bind_password_file``, or the name in
    ``directory.bind_password_env``), never by value.
    """
    d = cfg.directory
    raw_dir = cfg.raw.get("directory") or {}
    out: dict[str, Any] = {
        "uri": d.uri,
        "bind_dn": d.bind_dn,
        "base_dn": d.base_dn,
        "filter": d.filter,
        "login_attribute": d.attributes.login,
        "anchor_attribute": d.attributes.anchor,
        "disabled_filter": d.disabled_filter,
        "start_tls": d.start_tls,
        # A login waits for the directory; the sync's long read timeout would hang a client instead.
        "timeout": min(d.timeout_seconds, 10.0),
    }
    if d.exclude or d.leavers:
        out["out_of_scope"] = [*d.exclude, *d.leavers]
    if raw_dir.get("bind_password_file"):
        p = Path(os.path.expanduser(str(raw_dir["bind_password_file"])))
        out["bind_password_file"] = str(p if p.is_absolute() else Path(cfg.path).resolve().parent / p)
    elif raw_dir.get("bind_password_env"):
        out["bind_password_env"] = str(raw_dir["bind_password_env"])
    else:  # parse_config already refused this; kept so the result is never silently password-less
        raise ConfigError("is required (or bind_password_env)", cfg.path, "directory.bind_password_file")
    if d.ca_file:
        out["ca_file"] = d.ca_file
    return out


# --------------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------------


def typed_login(username: str, server_name: str) -> str | None:
    """The login a person typed, from what Synapse hands ``check_auth``; ``None`` for another server.

    Synapse passes the identifier's ``user`` unchanged: a bare login in any case and script, or a full
    Matrix ID (``@login:server``) when the client sends one.
    """
    text = username.strip()
    if text.startswith("@"):
        local, sep, server = text[1:].partition(":")
        if not sep or server.casefold() != server_name.casefold():
            return None
        text = local
    return text or None


# Control characters (Cc: NUL, newline, escape ...) in either; in a login also invisible formatting (Cf: a
# right-to-left override, a zero-width space), line and paragraph separators, and lone surrogates.
_BAD_IN_LOGIN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def input_refusal(username: str, password: object) -> str | None:
    """Why a login must be refused before anything is asked (Rule 7); ``None`` when it may go on."""
    if len(username) > MAX_LOGIN_LENGTH:
        return f"a login of {len(username)} characters (at most {MAX_LOGIN_LENGTH})"
    bad = next((c for c in username if unicodedata.category(c) in _BAD_IN_LOGIN), None)
    if bad is not None:
        return f"a control or formatting character U+{ord(bad):04X} in the login"
    if not isinstance(password, str) or not password:
        return "empty password"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"a password of {len(password)} characters (at most {MAX_PASSWORD_LENGTH})"
    if any(unicodedata.category(c) == "Cc" for c in password):
        return "a control character in the password"
    return None


def person_filter(cfg: ModuleConfig, login: str) -> str:
    """One person by login: the filter the sync uses too (:mod:`provisioner.ldap_common`)."""
    return _person_filter(cfg.filter, cfg.login_attribute, login)


def anchor_filter(cfg: ModuleConfig, anchor: str) -> str | None:
    """One person by anchor; binary GUIDs are matched on their little-endian bytes (AD's form)."""
    return _anchor_filter(cfg.filter, cfg.anchor_attribute, anchor)


@dataclass(frozen=True, slots=True)
class Person:
    dn: str
    anchor: str
    login: str


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a search by login or anchor found: one person, or why not."""

    person: Person | None
    refusal: str | None = None
    missing: bool = False  # nobody matched (as opposed to: not unique, disabled, broken)


def base_taken_by_other(base: str, me: Person, holders: list[Person]) -> Person | None:
    """The directory person the provisioner would give ``base`` to instead of ``me``, if any.

    The provisioner's rule (provisioner.core.identity, Rule 3): a login that already *is* the base localpart
    wins, then the lowest anchor. ``holders`` are the people whose login equals ``base`` ignoring case.
    """
    exact = sorted((p for p in holders if p.login == base and p.anchor != me.anchor), key=lambda p: p.anchor)
    if not exact:
        return None
    if me.login != base or exact[0].anchor < me.anchor:
        return exact[0]
    return None


# --------------------------------------------------------------------------------------------------------
# The directory (blocking; run in a thread)
# --------------------------------------------------------------------------------------------------------


class DirectoryUnavailable(Exception):
    """The directory could not be asked; the login is refused, never let through."""


class Directory:
    """Searches with the service account and binds as a person. Every method blocks; none keeps state."""

    def __init__(self, cfg: ModuleConfig) -> None:
        self.cfg = cfg
        tls = None
        if cfg.uri.startswith("ldaps://") or cfg.start_tls:
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=cfg.ca_file,
                            version=ssl.PROTOCOL_TLS_CLIENT)  # fmt: skip
        self.server = ldap3.Server(cfg.uri, get_info=ldap3.NONE, connect_timeout=cfg.timeout, tls=tls)

    def _connection(self, dn: str, password: str) -> ldap3.Connection:
        return ldap3.Connection(
            self.server,
            user=dn,
            password=password,
            authentication=ldap3.SIMPLE,
            read_only=True,
            raise_exceptions=False,
            receive_timeout=max(1, int(self.cfg.timeout)),
            check_names=False,
        )

    def _open(self, conn: ldap3.Connection) -> None:
        conn.open()
        if self.cfg.start_tls:
            conn.start_tls()

    def _search(self, flt: str, *, base: str | None = None, scope: Any = ldap3.SUBTREE) -> list[Person]:
        cfg = self.cfg
        conn = self._connection(cfg.bind_dn, cfg.bind_password)
        try:
            self._open(conn)
            if not conn.bind():
                raise DirectoryUnavailable(f"the service account {cfg.bind_dn} cannot bind: "
                                           f"{conn.result.get('description')}")  # fmt: skip
            attrs = [cfg.anchor_attribute, cfg.login_attribute]
            # A handful is enough: several matches are resolved by exact case (see _one) or refused.
            conn.search(base or cfg.base_dn, flt, scope, attributes=attrs, size_limit=_MAX_MATCHES)
            code = conn.result.get("result")
            # A size limit means more than _MAX_MATCHES; no such object, a DN that is gone: both are answers.
            if code not in (LDAP_SUCCESS, LDAP_SIZELIMIT_EXCEEDED, LDAP_NO_SUCH_OBJECT, None):
                raise DirectoryUnavailable(f"search {flt} failed: {conn.result.get('description')} ({code})")
            people: list[Person] = []
            for item in conn.response or ():
                if item.get("type") != "searchResEntry":
                    continue
                raw = {k.lower(): v for k, v in (item.get("raw_attributes") or {}).items()}
                anchors = raw.get(cfg.anchor_attribute.lower()) or []
                logins = raw.get(cfg.login_attribute.lower()) or []
                anchor = decode_value(cfg.anchor_attribute.lower(), anchors[0]).strip() if anchors else ""
                login = (
                    clean_text(decode_value(cfg.login_attribute.lower(), logins[0]), max_len=255)
                    if logins
                    else None
                )
                people.append(Person(dn=str(item["dn"]), anchor=anchor, login=login or ""))
            return people
        except lex.LDAPException as e:
            raise DirectoryUnavailable(f"{type(e).__name__}: {e}") from None
        finally:
            with contextlib.suppress(lex.LDAPException):
                conn.unbind()

    def _one(self, found: list[Person], what: str, typed: str | None = None) -> Lookup:
        """The single match, or why there is none.

        Logins that differ only in case (``kuznetsov.av`` and ``Kuznetsov.AV``) are one value to LDAP's
        case-ignoring ``uid`` equality; the entry whose login is exactly what was typed is then the one.
        Binding each candidate instead would count one person's typos against another's lockout.
        """
        if not found:
            return Lookup(None, f"no person with {what}", missing=True)
        if len(found) > 1 and typed is not None:
            exact = [p for p in found if p.login == typed]
            found = exact or found
        if len(found) > 1:
            return Lookup(None, f"{what} is not unique in the directory ({found[0].dn}, {found[1].dn})")
        person = found[0]
        if not person.anchor:
            return Lookup(None, f"{person.dn} has no {self.cfg.anchor_attribute}")
        if not person.login:
            return Lookup(None, f"{person.dn} has no usable {self.cfg.login_attribute}")
        try:
            container = Subtrees(self.cfg.out_of_scope).container_of(person.dn)
        except DNError as e:
            return Lookup(None, f"{person.dn} is not a valid DN: {e}")
        if container is not None:
            return Lookup(None, f"{person.dn} is in {container}, out of scope (directory.exclude/leavers)")
        if self.cfg.disabled_filter and self._search(
            self.cfg.disabled_filter, base=person.dn, scope=ldap3.BASE
        ):
            return Lookup(None, f"{person.dn} is disabled in the directory")
        return Lookup(person)

    def find_by_login(self, login: str) -> Lookup:
        """The one enabled person with this login (compared as the schema says: ``uid`` ignores case)."""
        found = self._search(person_filter(self.cfg, login))
        return self._one(found, f"{self.cfg.login_attribute}={login}", typed=login)

    def find_by_anchor(self, anchor: str) -> Lookup:
        flt = anchor_filter(self.cfg, anchor)
        if flt is None:
            return Lookup(None, f"{anchor!r} is not a valid {self.cfg.anchor_attribute}")
        return self._one(self._search(flt), f"{self.cfg.anchor_attribute}={anchor}")

    def logins_equal_to(self, login: str) -> list[Person]:
        """Everyone under the filter whose login equals ``login`` (ignoring case, as LDAP compares)."""
        return self._search(person_filter(self.cfg, login))

    def password_ok(self, dn: str, password: str) -> bool:
        """True when ``dn`` binds with ``password``; an empty password is never sent (Rule 2)."""
        if not password:
            return False
        conn = self._connection(dn, password)
        try:
            self._open(conn)
            if conn.bind():
                return True
            code = conn.result.get("result")
            if code == LDAP_INVALID_CREDENTIALS:
                return False
            raise DirectoryUnavailable(f"bind as {dn} failed: {conn.result.get('description')} ({code})")
        except lex.LDAPException as e:
            raise DirectoryUnavailable(f"bind as {dn}: {type(e).__name__}") from None
        finally:
            with contextlib.suppress(lex.LDAPException):
                conn.unbind()


# --------------------------------------------------------------------------------------------------------
# The Synapse module
# --------------------------------------------------------------------------------------------------------


class Refused(Exception):
    """A login that must not succeed; the message is the reason logged (never a password)."""


def _links_txn(txn: LoggingTransaction, column: str, value: str) -> list[tuple[str, str]]:
    """``(external_id, user_id)`` of civmatrix links whose ``column`` (external_id, user_id) is ``value``."""
    assert column in ("external_id", "user_id")
    txn.execute(
        f"SELECT external_id, user_id FROM user_external_ids WHERE auth_provider = ? AND {column} = ?",
        (EXTERNAL_ID_PROVIDER, value),
    )
    return [(str(row[0]), str(row[1])) for row in txn.fetchall()]


class DirectoryAuthProvider:
    """Synapse module: ``m.login.password`` checked against the directory (see the module docstring)."""

    def __init__(self, config: ModuleConfig, api: ModuleApi) -> None:
        self.cfg = config
        self.api = api
        self.directory = Directory(config)
        api.register_password_auth_provider_callbacks(
            auth_checkers={(LOGIN_TYPE, ("password",)): self.check_auth},
        )

    @staticmethod
    def parse_config(config: Mapping[str, Any]) -> ModuleConfig:
        """Called by Synapse at startup and by its config check; errors become Synapse ``ConfigError``."""
        try:
            return parse_module_config(config)
        except ConfigError as e:
            from synapse.module_api.errors import ConfigError as SynapseConfigError

            # Synapse prefixes the path with modules.<item n>.config, so the key is named in its message.
            raise SynapseConfigError(e.message, (e.key,) if e.key else None) from None

    async def check_auth(
        self, username: str, login_type: str, login_dict: Mapping[str, Any]
    ) -> CheckAuthResult:
        """Synapse's ``check_auth`` callback: ``(user_id, None)`` on success, ``None`` to refuse."""
        if login_type != LOGIN_TYPE:
            return None
        password = login_dict.get("password")
        refusal = input_refusal(username, password)
        if refusal is not None:
            log.info("directory login %r refused: %s", username[:MAX_LOGIN_LENGTH], refusal)
            return None
        assert isinstance(password, str)
        login = typed_login(username, self.api.server_name)
        shown = login if login is not None else username
        try:
            if login is None:
                raise Refused("a Matrix ID of another server")
            person = await self._find(login)
            ok = await self.api.defer_to_thread(self.directory.password_ok, person.dn, password)
            if not ok:
                raise Refused(f"wrong password for {person.dn}")
            user_id = await self._account(person)
        except Refused as e:
            log.info("directory login %r refused: %s", shown, e)
            return None
        except DirectoryUnavailable as e:
            log.error("directory login %r refused: the directory is unavailable (%s)", shown, e)
            return None
        except Exception:
            # A traceback holds no local values, so the password cannot leak through it.
            log.exception("directory login %r refused: unexpected error", shown)
            return None
        log.info("directory login %r accepted as %s (%s)", shown, user_id, person.dn)
        return user_id, None

    async def _find(self, login: str) -> Person:
        """The person by login, else by the account named ``login`` and its anchor link (Rule 1)."""
        found = await self.api.defer_to_thread(self.directory.find_by_login, login)
        if found.person is not None:
            return found.person
        localpart = login.lower()
        if found.missing and is_valid_localpart(localpart):
            user_id = f"@{localpart}:{self.api.server_name}"
            links = await self._links("user_id", user_id)
            if len(links) == 1:
                by_anchor = await self.api.defer_to_thread(self.directory.find_by_anchor, links[0][0])
                if by_anchor.person is not None:
                    return by_anchor.person
                raise Refused(f"{found.refusal}; {user_id} is linked to {links[0][0]}: {by_anchor.refusal}")
        raise Refused(found.refusal or "not found")

    async def _links(self, column: str, value: str) -> list[tuple[str, str]]:
        links: list[tuple[str, str]] = await self.api.run_db_interaction(
            "civmatrix_directory_login_links", _links_txn, column, value
        )
        return links

    async def _linked_account(self, person: Person) -> str | None:
        """The account linked to the person's anchor, checked to be linked to nobody else."""
        links = await self._links("external_id", person.anchor)
        if not links:
            return None
        user_id = links[0][1]
        others = [a for a, _ in await self._links("user_id", user_id) if a != person.anchor]
        if others:
            raise Refused(
                f"{user_id} is linked to {person.anchor} and to {others[0]} too; an admin must fix it"
            )
        return user_id

    async def _account(self, person: Person) -> str:
        """The person's account, made at the base localpart when they have none yet (Rules 3 and 4)."""
        user_id = await self._linked_account(person)
        if user_id is None:
            user_id = await self._claim(person)
        if await self.api.check_user_exists(user_id) is None:
            await self._register(user_id)
        return user_id

    async def _claim(self, person: Person) -> str:
        """Link the anchor to ``@base_localpart(login)`` if the provisioner would give it that ID."""
        base = base_localpart(person.login)
        user_id = f"@{base}:{self.api.server_name}"
        if await self.api.check_user_exists(user_id) is not None:
            raise Refused(
                f"no account linked to {person.anchor} and {user_id} exists unlinked (another person's, a "
                "service account's, or adopted without a link: an admin must add the external id)"
            )
        linked_to = {anchor for anchor, _ in await self._links("user_id", user_id)}
        if linked_to == {person.anchor}:
            return user_id  # a concurrent first login of the same person linked it a moment ago
        if linked_to:
            raise Refused(f"no account linked to {person.anchor} and {user_id} is linked to another person")
        holders = await self.api.defer_to_thread(self.directory.logins_equal_to, base)
        other = base_taken_by_other(base, person, holders)
        if other is not None:
            raise Refused(f"{user_id} belongs to {other.dn} (login {other.login!r}); the next sync makes one")
        try:
            await self.api.record_user_external_id(EXTERNAL_ID_PROVIDER, person.anchor, user_id)
        except Exception as e:  # ExternalIDReuseException: a concurrent login linked the anchor first
            linked = await self._linked_account(person)
            if linked is None:
                raise Refused(f"cannot link {person.anchor} to {user_id}: {type(e).__name__}") from None
            return linked
        log.info("linked %s (%s) to %s before its first sync", person.dn, person.anchor, user_id)
        return user_id

    async def _register(self, user_id: str) -> None:
        from synapse.module_api.errors import Codes, SynapseError

        localpart = user_id[1:].split(":", 1)[0]
        try:
            await self.api.register_user(localpart)
        except SynapseError as e:
            if e.errcode != Codes.USER_IN_USE:  # the provisioner (or a concurrent login) made it: fine
                raise Refused(f"cannot register {user_id}: {e.msg}") from None
        log.info("registered %s on first directory login", user_id)
