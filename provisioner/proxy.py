"""The nginx site in front of Synapse, rendered from a model: one renderer for deploy/, demo and tests.

:class:`Proxy` says everything the site depends on (where the main process and each worker pool listen,
which paths go where, the search service, TLS or not, the upload limit, the paths allowed without a token).
:func:`http_context` renders the ``map``/``upstream`` blocks and :func:`server_block` the ``server {}``;
both go inside nginx's ``http {}`` (``conf.d``/``sites-enabled`` files are included there).
:mod:`provisioner.deploy` builds the model from a :class:`provisioner.deploy.Deployment` and adds the TLS
redirect and the Element host; :mod:`provisioner.embedded.nginx` wraps the same text into a whole
``nginx.conf`` for a private nginx on loopback.

Rules of the site
-----------------
Rule 1. ``/_synapse/admin`` is refused here: Synapse workers mount admin servlets on every client listener.
Rule 2. No federation: ``/_matrix/federation`` and ``/_matrix/key`` are refused, and
``/.well-known/matrix/server`` says there is no federation endpoint.
Rule 3. A request under ``/_matrix/`` without an access token (header or ``access_token`` query) is refused
with ``401 M_MISSING_TOKEN`` unless its path is in :data:`provisioner.synapse.access.PUBLIC_CLIENT_PATHS`
(or it is a CORS preflight, which never carries one). An outsider reaches no servlet but login.
Rule 4. ``X-Forwarded-For`` carries the client's address; Synapse's listeners behind the proxy set
``x_forwarded: true``, so per-address login limits count people, not the proxy.
Rule 5. The colleague search goes to the search service when one is configured; when it is down or fails
(502/503/504), nginx answers the same request from Synapse's user directory instead.
Rule 6. ``/.well-known/matrix/client`` carries :data:`E2EE_WELLKNOWN` beside the base URL
(:func:`client_wellknown`): what Element's clients read about end-to-end encryption. The same document must
be served at ``https://<server_name>/.well-known/matrix/client`` (the organisation's web site), because
that is where Element Web looks once someone is logged in; :mod:`provisioner.deploy` renders it as a file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from provisioner.synapse.access import PUBLIC_CLIENT_PATHS

SEARCH_ROUTE = r"^/_matrix/client/(r0|v3|unstable)/user_directory/search$"
MAIN = "synapse_main"
SEARCH = "civmatrix_search"

# Element's end-to-end encryption settings (the ``io.element.e2ee`` key of the client well-known).
# - secure_backup_required: a key backup is the only way history survives a new device (the server never
#   holds a readable room key), so a person is asked to set up recovery at first login and may not skip it.
#   Element Android and iOS enforce it; Element Web and Element X no longer read it and recommend recovery
#   to everyone instead (docs/RUNBOOK.md says what each shows).
# - secure_backup_setup_methods ["key"]: a generated recovery key, never a chosen passphrase. The server
#   stores the encrypted backup, so whoever copies its database can try passphrases offline; a generated
#   key cannot be guessed. Element Web and Element X only generate keys now, so every client agrees.
# - default true: private rooms start encrypted. Synapse encrypts them anyway
#   (encryption_enabled_by_default_for_room_type: invite covers DMs and private rooms) and the sync
#   encrypts department rooms itself (layout.room_encryption), so the client's toggle shows what happens.
E2EE_WELLKNOWN: Mapping[str, object] = MappingProxyType(
    {"default": True, "secure_backup_required": True, "secure_backup_setup_methods": ("key",)}
)


@dataclass(frozen=True, slots=True)
class Upstream:
    """An nginx ``upstream``: a pool of ``host:port`` servers and the path regexes routed to it."""

    name: str
    servers: tuple[str, ...]
    routes: tuple[str, ...] = ()
    # Hash on the access token: one device's long-polling /sync keeps hitting the worker whose caches
    # hold its rooms.
    sticky: bool = False


@dataclass(frozen=True, slots=True)
class Tls:
    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class Proxy:
    """Everything the nginx site depends on."""

    server_name: str
    public_baseurl: str
    listen: tuple[str, ...]
    main: Upstream
    workers: tuple[Upstream, ...] = ()
    tls: Tls | None = None
    # ``host:port`` of the search service (config ``search.listen``), or None to let Synapse answer.
    search: str | None = None
    # Synapse's ``max_upload_size``, in nginx's size syntax (Synapse parses the same "50M").
    max_body_size: str = "50M"
    public_paths: tuple[str, ...] = PUBLIC_CLIENT_PATHS

    def upstream_for(self, path_regex: str) -> str:
        """The upstream that serves a route (the search fallback uses it)."""
        return next((u.name for u in self.workers if path_regex in u.routes), self.main.name)


def _upstream(u: Upstream) -> str:
    lines = [f"upstream {u.name} {{"]
    if u.sticky:
        lines.append("    hash $http_authorization consistent;")
    lines += [f"    server {s};" for s in u.servers]
    lines += ["    keepalive 32;", "}"]
    return "\n".join(lines)


def _quote(text: str) -> str:
    """An nginx string literal (single quotes; nginx unescapes \\' and \\\\ inside)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _error(errcode: str, message: str) -> str:
    return _quote(json.dumps({"errcode": errcode, "error": message}))


def http_context(p: Proxy) -> str:
    """The ``map`` and ``upstream`` blocks (http level) the server block relies on."""
    public = "\n".join(f"    {_quote('~' + regex)} 0;" for regex in p.public_paths)
    maps = f"""# Rule 3: which requests need an access token and carry none.
map $request_method $civmatrix_preflight {{
    OPTIONS 1;
    default 0;
}}
map $uri $civmatrix_needs_token {{
{public}
    "~^/_matrix/" 1;
    default 0;
}}
map "$http_authorization$arg_access_token" $civmatrix_has_token {{
    "" 0;
    default 1;
}}
map "$civmatrix_preflight$civmatrix_needs_token$civmatrix_has_token" $civmatrix_refuse {{
    "010" 1;
    default 0;
}}"""
    upstreams = [_upstream(p.main), *(_upstream(u) for u in p.workers)]
    if p.search is not None:
        upstreams.append(_upstream(Upstream(SEARCH, (p.search,))))
    return maps + "\n\n" + "\n\n".join(upstreams) + "\n"


def client_wellknown(public_baseurl: str) -> dict[str, object]:
    """The ``/.well-known/matrix/client`` document: where the server is, and Rule 6's encryption policy."""
    return {"m.homeserver": {"base_url": public_baseurl.rstrip("/")}, "io.element.e2ee": dict(E2EE_WELLKNOWN)}


def _location(match: str, body: Sequence[str]) -> str:
    return f"    location {match} {{\n" + "".join(f"        {line}\n" for line in body) + "    }"


def _locations(p: Proxy) -> list[str]:
    wellknown = json.dumps(client_wellknown(p.public_baseurl))
    refuse = f"return 404 {_error('M_UNRECOGNIZED', 'Unrecognized request')};"
    no_federation = f"return 404 {_error('M_NOT_FOUND', 'This server does not federate')};"
    out = [
        _location(
            "= /.well-known/matrix/client",
            # Web clients read it cross-origin (the Matrix spec asks for this header).
            ["add_header Access-Control-Allow-Origin * always;", f"return 200 {_quote(wellknown)};"],
        ),
        # Rule 2: no delegation to a federation port; remote servers find nothing to talk to.
        _location("= /.well-known/matrix/server", [no_federation]),
        # Rule 1.
        _location("^~ /_synapse/admin", [refuse]),
        _location("^~ /_matrix/federation", [no_federation]),
        _location("^~ /_matrix/key", [no_federation]),
    ]
    if p.search is not None:
        # Rule 5. Listed before the worker routes: nginx takes the first matching regex location.
        out.append(
            _location(
                f"~ {SEARCH_ROUTE}",
                [
                    f"proxy_pass http://{SEARCH};",
                    "proxy_connect_timeout 2s;",
                    "proxy_intercept_errors on;",
                    "error_page 502 503 504 = @synapse_user_directory;",
                ],
            )
        )
        out.append(
            _location("@synapse_user_directory", [f"proxy_pass http://{p.upstream_for(SEARCH_ROUTE)};"])
        )
    for upstream in p.workers:
        out += [_location(f"~ {route}", [f"proxy_pass http://{upstream.name};"]) for route in upstream.routes]
    out.append(_location("~ ^(/_matrix/|/_synapse/client/|/health$)", [f"proxy_pass http://{p.main.name};"]))
    out.append(_location("/", [refuse]))
    return out


def server_block(p: Proxy) -> str:
    """The ``server {}`` that serves Matrix clients."""
    head = [f"    listen {listen};" for listen in p.listen]
    if p.tls is not None:
        head += [
            f"    ssl_certificate {p.tls.cert};",
            f"    ssl_certificate_key {p.tls.key};",
            "    ssl_protocols TLSv1.2 TLSv1.3;",
            "    ssl_session_cache shared:civmatrix:10m;",
            '    add_header Strict-Transport-Security "max-age=31536000" always;',
        ]
    head.append(f"    server_name {p.server_name};")
    settings = f"""
    default_type application/json;
    server_tokens off;
    # Synapse's max_upload_size: a larger body is refused here, before it crosses the proxy.
    client_max_body_size {p.max_body_size};
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
    # Rule 4.
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Proto $scheme;
    # Long-polling /sync holds a request up to 30 s (Element); give it room.
    proxy_read_timeout 120s;

    # Rule 3. A server-level rewrite runs before any location is chosen, so no route (a worker, the search
    # service) can bypass it; the answer carries CORS so Element Web can read it.
    if ($civmatrix_refuse) {{
        rewrite ^ /_civmatrix_missing_token last;
    }}
    location = /_civmatrix_missing_token {{
        internal;
        add_header Access-Control-Allow-Origin * always;
        return 401 {_error("M_MISSING_TOKEN", "Missing access token")};
    }}
"""
    return "server {\n" + "\n".join(head) + "\n" + settings + "\n" + "\n".join(_locations(p)) + "\n}\n"


def site(p: Proxy) -> str:
    """``http_context`` and ``server_block`` together: a whole site file for ``conf.d``."""
    return http_context(p) + "\n" + server_block(p)
