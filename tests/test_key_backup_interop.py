"""Encrypted history survives a new device: Element's client stack restores room keys from the key backup.

``tests/interop/key_backup.mjs`` is a person in Element (matrix-js-sdk with its Rust crypto), logging in
with the directory password (slapd, the login module) to Synapse through the product's nginx site. On the
first device it reads the client well-known, which asks for a key backup with a generated recovery key,
sets up cross-signing, secret storage and the backup, writes in a private room (encrypted by the server's
default) and logs the device out. A second device logs in, cannot read the history, enters
the recovery key, restores the backup and reads the exact texts. The server is checked on the way: no
backup until a client makes one, then the backup's version, key count and etag, and only ciphertext in it.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from provisioner.config import load_config
from provisioner.deploy import LOGIN_MODULE
from provisioner.embedded.slapd import ssha
from provisioner.sample import generate_directory
from provisioner.synapse.auth import module_config_from
from tests.closed_probes import http
from tests.helpers import write_config
from tests.test_bot_interop import INTEROP, _install, _steps
from tests.test_closed_server import _nginx_in_front_of

pytestmark = [pytest.mark.synapse, pytest.mark.slapd]

LOGIN = "ivanov.ii"

MESSAGES = [
    "Совещание по бюджету переносится на четверг, 15:00.",
    "Проект приказа во вложении, замечания до пятницы.",
    "Пропуск для подрядчика оформлен.",
]
BACKUP_ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"


async def _run(mode: str, url: str, last: str, env: dict[str, str], log: Path) -> list[Any]:
    """One run of the script; its "@@" steps once it exited 0."""
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            "node", "key_backup.mjs", mode, url, LOGIN, last,
            cwd=INTEROP, env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
        try:
            steps = []
            async for step in _steps(proc):
                steps.append(step)
                if step["step"] in ("backed_up", "restored"):
                    break
            assert await asyncio.wait_for(proc.wait(), 30) == 0
            return steps
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_a_second_device_restores_the_history_from_the_key_backup(
    make_slapd: Any, fresh_synapse: Any, tmp_path: Path
) -> None:
    install = asyncio.create_task(asyncio.to_thread(_install))
    directory = generate_directory(80, seed=11, broken=False, disabled_fraction=0.0)
    ldap = make_slapd(directory=directory)
    person = next(p for p in directory.special if p.uid == LOGIN)
    password = "Backup-check-pw-1"
    ldap.modify(
        f"dn: {person.dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: {ssha(password)}\n\n"
    )
    login_module = module_config_from(load_config(write_config(tmp_path, ldap)))
    hs = fresh_synapse(modules=[{"module": LOGIN_MODULE, "config": login_module}])
    await install
    env = {"CIVMATRIX_PASSWORD": password}
    with _nginx_in_front_of(tmp_path, hs.server.public_port) as url:
        # The test's own session (the first directory login also creates the account).
        status, session = http("POST", f"{url}/_matrix/client/v3/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": LOGIN}, "password": password,
        })  # fmt: skip
        assert status == 200, session
        token = session["access_token"]
        # Before any client made one, the server has no backup to offer (why history was lost before).
        status, reply = http("GET", f"{url}/_matrix/client/v3/room_keys/version", token=token)
        assert (status, reply.get("errcode")) == (404, "M_NOT_FOUND")

        well_known, backed_up = await asyncio.wait_for(
            _run("first", url, json.dumps(MESSAGES), env, tmp_path / "first.log"), 150
        )
        assert well_known == {
            "step": "well_known",
            "e2ee": {"default": True, "secure_backup_required": True, "secure_backup_setup_methods": ["key"]},
        }
        assert backed_up["step"] == "backed_up" and backed_up["recovery_key"]

        # The server now reports the backup Element made: its version, one room key (one room, one session)
        # and the etag clients compare to notice keys added by another device.
        status, info = http("GET", f"{url}/_matrix/client/v3/room_keys/version", token=token)
        assert status == 200, info
        assert info["version"] == backed_up["version"] and info["algorithm"] == BACKUP_ALGORITHM
        assert info["count"] == 1 and isinstance(info["etag"], str) and info["etag"]
        room = urllib.parse.quote(backed_up["room"])
        path = f"/_matrix/client/v3/room_keys/keys/{room}?version={info['version']}"
        status, keys = http("GET", url + path, token=token)
        assert status == 200 and len(keys["sessions"]) == 1
        # What the server keeps is encrypted to the backup key, which only the recovery key opens.
        (session,) = keys["sessions"].values()
        assert set(session["session_data"]) == {"ephemeral", "ciphertext", "mac"}
        # The old computer is gone: nothing can forward the room key to the new one but the backup.
        status, devices = http("GET", f"{url}/_matrix/client/v3/devices", token=token)
        assert backed_up["device"] not in {d["device_id"] for d in devices["devices"]}

        before, restored = await asyncio.wait_for(
            _run(
                "second", url, backed_up["room"],
                env | {"CIVMATRIX_RECOVERY_KEY": backed_up["recovery_key"]}, tmp_path / "second.log",
            ),
            150,
        )  # fmt: skip
        assert before["step"] == "before_recovery" and before["device"] != backed_up["device"]
        assert before["texts"] == [None] * len(MESSAGES), "the new device read the history without the backup"
        assert restored["step"] == "restored"
        assert restored["texts"] == MESSAGES
        assert restored["imported"] == restored["total"] == 1
