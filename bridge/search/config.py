"""The ``search:`` section of the shared config file, parsed once into a frozen :class:`SearchConfig`.

Both sides read it: the provisioner takes ``index`` (where each sync leaves the snapshot), the search
service (``bridge --config FILE search``) takes all of it. Errors name the file and the dotted key.

``search:`` keys:

* ``listen``: ``host:port`` the service binds (the reverse proxy routes
  ``/_matrix/client/(r0|v3|unstable)/user_directory/search`` to it). Default ``127.0.0.1:8010``: loopback.
  A non-loopback IP address (``0.0.0.0:8090``) is taken only when written here explicitly: the compose
  deployment needs it, because nginx reaches the service in synapse's network namespace as ``synapse:8090``.
  That is sound because every request's token is checked against ``homeserver`` (whoami) before anything is
  answered; on a host, the systemd unit still admits loopback peers only (``IPAddressAllow=localhost``).
* ``index``: the snapshot file the sync writes and the service loads (default ``state/search.json``).
* ``homeserver``: the client-API URL the service checks callers' tokens against (``/account/whoami``);
  default ``homeserver.url``.
* ``auth_cache_seconds``: how long a token that whoami accepted stays trusted without asking again
  (default 30; a locked user is refused within this time at most).
* ``reload_seconds``: how often the service looks whether the sync replaced the snapshot (default 1).
* ``show_context``: put title and unit after the name in results (``Иванов Иван — Начальник отдела,
  Отдел ЖКХ``); the profile name elsewhere stays plain (default true).

Relative paths are relative to the config file.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEARCH_KEYS = frozenset(
    {"listen", "index", "homeserver", "auth_cache_seconds", "reload_seconds", "show_context"}
)
DEFAULT_INDEX = "state/search.json"
_LISTEN = re.compile(r"^(?P<host>[0-9.]+|\[[0-9a-fA-F:]+\]|localhost):(?P<port>\d{1,5})$")


class SearchConfigError(Exception):
    """``file:search.key: message``."""

    def __init__(self, message: str, path: str, key: str | None = None) -> None:
        self.message, self.path, self.key = message, path, key
        super().__init__(f"{path}:{key}: {message}" if key else f"{path}: {message}")


@dataclass(frozen=True, slots=True)
class SearchConfig:
    host: str
    port: int
    index: Path
    homeserver_url: str
    auth_cache_seconds: float = 30.0
    reload_seconds: float = 1.0
    show_context: bool = True


def _is_address(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def index_path(raw: Mapping[str, Any], path: str, *, base_dir: Path | None = None) -> Path | None:
    """The snapshot path from ``search.index``, or ``None`` when the config has no ``search:`` section."""
    section = raw.get("search")
    if section is None:
        return None
    return parse_search(raw, path, base_dir=base_dir).index


def parse_search(raw: Mapping[str, Any], path: str, *, base_dir: Path | None = None) -> SearchConfig:
    """Validate the ``search:`` section (and ``homeserver.url`` as the default for ``search.homeserver``)."""
    base = base_dir or Path(path).resolve().parent
    section = raw.get("search")
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        raise SearchConfigError("must be a mapping", path, "search")

    def err(msg: str, key: str) -> SearchConfigError:
        return SearchConfigError(msg, path, f"search.{key}")

    unknown = sorted(set(map(str, section)) - SEARCH_KEYS)
    if unknown:
        raise err(f"unknown key; known: {', '.join(sorted(SEARCH_KEYS))}", unknown[0])
    listen = section.get("listen", "127.0.0.1:8010")
    m = _LISTEN.match(listen) if isinstance(listen, str) else None
    if m is None or not 0 < int(m["port"]) < 65536 or not _is_address(m["host"]):
        raise err(
            f"must be an IP address and port like 127.0.0.1:8010 (loopback; 0.0.0.0:8090 for all addresses"
            f" when a proxy in another namespace must reach it), not {listen!r}",
            "listen",
        )
    index = section.get("index", DEFAULT_INDEX)
    if not isinstance(index, str) or not index.strip():
        raise err("must be a file path", "index")
    index_p = Path(os.path.expanduser(index.strip()))
    hs = raw.get("homeserver")
    default_url = hs.get("url") if isinstance(hs, Mapping) else None
    url = section.get("homeserver", default_url)
    if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
        raise err(
            f"must be the homeserver's client-API URL like http://127.0.0.1:8008, not {url!r}", "homeserver"
        )

    def number(key: str, default: float, lo: float, hi: float) -> float:
        v = section.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise err(f"must be a number from {lo:g} to {hi:g}, not {v!r}", key)
        return float(v)

    show = section.get("show_context", True)
    if not isinstance(show, bool):
        raise err(f"must be true or false, not {show!r}", "show_context")
    return SearchConfig(
        host=m["host"].strip("[]"),
        port=int(m["port"]),
        index=index_p if index_p.is_absolute() else base / index_p,
        homeserver_url=url.rstrip("/"),
        auth_cache_seconds=number("auth_cache_seconds", 30.0, 0.0, 3600.0),
        reload_seconds=number("reload_seconds", 1.0, 0.05, 3600.0),
        show_context=show,
    )
