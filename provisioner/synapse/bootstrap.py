"""Tokens for the two local accounts (the provisioning admin and the bot), minted on the loopback listener.

Local passwords are off (Rule 4 of :mod:`provisioner.synapse.config`), so these accounts never log in
with a password: each gets its first token (and device) from its registration, made once with a temporary
shared registration secret on the admin listener, and every later token from
:mod:`provisioner.synapse.tokens` there (same device, old token deleted). Run it where the admin listener is
reachable (it binds loopback only: inside the Synapse container, or on the Synapse host); stdlib only::

    python -m provisioner.synapse.bootstrap register --url http://127.0.0.1:8080 \\
        --secret-file /run/secrets/bootstrap_registration --user admin --admin --token-file admin_token
    python -m provisioner.synapse.bootstrap rotate --url http://127.0.0.1:8080 \\
        --admin-token-file admin_token --token-file bot_token

Tokens go to files (mode 0600, replaced atomically), never to the terminal. docs/RUNBOOK.md has the whole
procedure.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.synapse.config import DEVICE_TOKEN_PATH, SynapseError


@dataclass(frozen=True, slots=True)
class Minted:
    user_id: str
    access_token: str = field(repr=False)
    device_id: str | None
    password: str = field(default="", repr=False)  # what registration stored; it logs nobody in


def call(
    url: str, method: str, path: str, body: Mapping[str, Any] | None = None, token: str | None = None
) -> dict[str, Any]:
    """One JSON request; raises :class:`SynapseError` naming the request and Synapse's answer."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            parsed: dict[str, Any] = json.loads(response.read() or b"{}")
            return parsed
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", errors="replace")[:500]
        raise SynapseError(f"{method} {path} answered {err.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as err:
        raise SynapseError(f"{method} {url}{path}: {getattr(err, 'reason', err)}") from None


def register(
    url: str,
    secret: str,
    localpart: str,
    *,
    admin: bool,
    password: str | None = None,
    displayname: str | None = None,
) -> Minted:
    """Shared-secret registration (``/_synapse/admin/v1/register``, HMAC-SHA1 over nonce, user, password,
    admin flag): the account and its first token and device. The password is random unless given."""
    password = password or secrets.token_urlsafe(24)
    nonce = str(call(url, "GET", "/_synapse/admin/v1/register")["nonce"])
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    for part in (nonce, localpart, password):
        mac.update(part.encode("utf-8"))
        mac.update(b"\x00")
    mac.update(b"admin" if admin else b"notadmin")
    body: dict[str, Any] = {"nonce": nonce, "username": localpart, "password": password, "admin": admin,
                            "mac": mac.hexdigest()}  # fmt: skip
    if displayname is not None:
        body["displayname"] = displayname
    reply = call(url, "POST", "/_synapse/admin/v1/register", body)
    return Minted(str(reply["user_id"]), str(reply["access_token"]), reply.get("device_id"), password)


def whoami(url: str, token: str) -> tuple[str, str | None]:
    reply = call(url, "GET", "/_matrix/client/v3/account/whoami", token=token)
    return str(reply["user_id"]), reply.get("device_id")


def rotate(url: str, admin_token: str, token: str) -> str:
    """A new token for the account and device of ``token``; every other token of that device is deleted.

    ``admin_token`` may be ``token`` itself (the admin rotating its own).
    """
    user_id, device_id = whoami(url, token)
    if not device_id:
        raise SynapseError(f"the token of {user_id} has no device; register the account's first token anew")
    reply = call(url, "POST", DEVICE_TOKEN_PATH, {"user_id": user_id, "device_id": device_id}, admin_token)
    return str(reply["access_token"])


class TokenFile:
    """A token file replaced atomically, readable by its owner only.

    The temporary file is made *before* the token is minted (:meth:`__init__`), so once Synapse has deleted
    the old token, only a write and a rename in a directory already proven writable stand between the new
    token and the disk.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        os.fchmod(fd, 0o600)
        self._handle = os.fdopen(fd, "w", encoding="utf-8")

    def commit(self, token: str) -> None:
        with self._handle:
            self._handle.write(token + "\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())
        os.replace(self._tmp, self.path)

    def discard(self) -> None:
        self._handle.close()
        Path(self._tmp).unlink(missing_ok=True)


def _read(path: str) -> str:
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise SynapseError(f"cannot read {path}: {e.strerror or e}") from None
    if not value:
        raise SynapseError(f"{path} is empty")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m provisioner.synapse.bootstrap", description=(__doc__ or "").split("\n", 1)[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    reg = sub.add_parser("register", help="create a local account; write its first token")
    reg.add_argument("--user", required=True, help="localpart, e.g. admin or events")
    reg.add_argument("--admin", action="store_true", help="a server admin (the provisioning account)")
    reg.add_argument("--displayname")
    reg.add_argument("--secret-file", required=True, help="the temporary registration_shared_secret")
    rot = sub.add_parser("rotate", help="replace the token in --token-file by a new one (same device)")
    rot.add_argument("--admin-token-file", help="a server admin's token (default: --token-file itself)")
    for p in (reg, rot):
        p.add_argument("--url", required=True, help="the loopback admin listener, e.g. http://127.0.0.1:8080")
        p.add_argument("--token-file", required=True, type=Path, help="where the token is (to be) written")
    args = parser.parse_args(argv)
    try:
        if args.command == "register":
            secret = _read(args.secret_file)
            out = TokenFile(args.token_file)
            try:
                minted = register(args.url, secret, args.user, admin=args.admin, displayname=args.displayname)
            except BaseException:
                out.discard()
                raise
            out.commit(minted.access_token)
            print(f"registered {minted.user_id} (device {minted.device_id}); token in {args.token_file}")
        else:
            token = _read(str(args.token_file))
            admin_token = _read(args.admin_token_file) if args.admin_token_file else token
            out = TokenFile(args.token_file)
            try:
                new = rotate(args.url, admin_token, token)
            except BaseException:
                out.discard()
                raise
            out.commit(new)
            print(f"new token in {args.token_file}; the old one no longer works")
    except (SynapseError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
