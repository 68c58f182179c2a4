"""Which client-API requests may come without an access token: the one list, read by Synapse and nginx.

The rule: every request under :data:`GUARDED_PREFIX` needs a valid access token, except the paths in
:data:`PUBLIC_CLIENT_PATHS`, which a client must reach *before* it has one. Both enforcers read this list:

* the reverse proxy answers ``401 M_MISSING_TOKEN`` itself when a request carries no token at all
  (:mod:`provisioner.proxy` renders the rule into the nginx site, Rule 3 there);
* Synapse's own listener (:mod:`provisioner.synapse.guard`) refuses a request whose token is missing *or
  invalid*, so a listener reached without the proxy is closed too, and a made-up ``Bearer x`` header does
  not open the servlets that Synapse serves without authentication (room alias lookup, room summary,
  room directory visibility).

Why each path is public (everything else, including registration, password reset, SSO redirects and the
rendezvous endpoints of QR login, is not: this server has none of those):

* ``/_matrix/client/versions`` — the first request of every client, to learn which spec versions the
  server speaks; it carries no data.
* ``/_matrix/client/{version}/login`` — ``GET`` lists the login flows (only ``m.login.password`` here);
  ``POST`` is the login itself. The versions are those Synapse serves the servlet under.
* ``/_matrix/client/{version}/refresh`` — Synapse issues refresh tokens to clients that ask for them
  (Element X does) and lets their access tokens expire after 5 minutes; the client then presents the
  refresh token in the body, with no ``Authorization`` header. Refusing it would log those clients out.
* ``/_matrix/client/v1/auth_metadata`` (and MSC2965's unstable name) — clients ask it before login to
  choose between OAuth 2.0 and password login; without an OAuth server Synapse answers ``404
  M_UNRECOGNIZED``, which is what tells the client to offer the password form. A 401 would not.

Outside the guarded prefix: ``/.well-known/matrix/client`` (server discovery, public by nature, served by
nginx or Synapse's well-known resource) and ``/health``. CORS preflights (``OPTIONS``) never carry a token
and are answered by Synapse before any servlet: both enforcers let every ``OPTIONS`` through
(:data:`TOKENLESS_METHODS`).

What counts as a token: an ``Authorization: Bearer ...`` header or an ``access_token`` query parameter
(deprecated by the spec, still accepted by Synapse and sent by older clients).
"""

from __future__ import annotations

import re
import urllib.parse

GUARDED_PREFIX = "/_matrix/client/"

# Regular expressions, each matched against the whole path (no query string), as the client sent it.
PUBLIC_CLIENT_PATHS: tuple[str, ...] = (
    r"^/_matrix/client/versions$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/login$",
    r"^/_matrix/client/(r0|v3|unstable)/refresh$",
    r"^/_matrix/client/(v1|unstable|unstable/org\.matrix\.msc2965)/auth_metadata$",
)

TOKENLESS_METHODS: tuple[str, ...] = ("OPTIONS",)

# Profile fields the directory owns (MSC4133 keys: org.civmatrix.title, .department, .phone, .email, and
# the combined org.civmatrix.directory): written by the sync with the admin's token, read by the bot and
# shown to colleagues, so nobody else may write them — an employee could otherwise give themselves any
# title. The display name is Synapse's own switch (enable_set_displayname: false).
DIRECTORY_PROFILE_PREFIX = "org.civmatrix."
_PROFILE_FIELD = re.compile(
    r"^/_matrix/client/(v3|unstable/uk\.tcpip\.msc4133)/profile/[^/]*/(?P<field>[^/]*)$"
)

_PUBLIC = re.compile("|".join(f"(?:{p})" for p in PUBLIC_CLIENT_PATHS))


def is_public_client_path(path: str) -> bool:
    """True when a request for ``path`` (no query string) may come without a token."""
    return _PUBLIC.fullmatch(path) is not None


def needs_token(method: str, path: str) -> bool:
    """The rule itself: requests under :data:`GUARDED_PREFIX` need a token unless public or preflight."""
    if method.upper() in TOKENLESS_METHODS:
        return False
    return path.startswith(GUARDED_PREFIX) and not is_public_client_path(path)


def writes_directory_profile_field(method: str, path: str) -> bool:
    """True for a write of a directory-owned profile field (only a server admin may: the sync)."""
    if method.upper() not in ("PUT", "DELETE"):
        return False
    m = _PROFILE_FIELD.fullmatch(path)
    return m is not None and urllib.parse.unquote(m["field"]).startswith(DIRECTORY_PROFILE_PREFIX)
