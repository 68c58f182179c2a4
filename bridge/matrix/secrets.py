"""The one reader of secrets: a token or a password from a file, or from an environment variable.

No secret is written in a config file or on a command line; the config names a file (``*_file``) or a
variable (``*_env``). The provisioner's admin token, the directory's bind password (for the sync and for
the login module inside Synapse) and the bot's access token are all read here, so they follow one rule:
stripped of surrounding whitespace (a trailing newline from ``echo`` is not part of a token), never empty,
and errors that say where the secret was looked for without ever showing it.

It lives beside the Matrix client because both the provisioner and the bridge already depend on this
package, and nothing here depends on either of them; it imports only the standard library, so the module
running inside Synapse can use it too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

Source = Literal["file", "env"]


class SecretError(ValueError):
    """A secret that cannot be read; ``source`` says whether the file or the variable is to blame."""

    def __init__(self, message: str, source: Source) -> None:
        super().__init__(message)
        self.message = message
        self.source = source


def read_secret(
    *,
    file: str | os.PathLike[str] | None = None,
    env: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The secret in ``file`` if one is named, else in the variable ``env`` (of ``environ``, default the
    process environment). Raises :class:`SecretError` if it is unreadable, unset or empty."""
    if file is not None:
        path = Path(file)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise SecretError(f"cannot read {path}: {e.strerror or e}", "file") from None
        if not text:
            raise SecretError(f"{path} is empty", "file")
        return text
    if env is not None:
        value = (os.environ if environ is None else environ).get(env, "").strip()
        if not value:
            raise SecretError(f"environment variable {env} is not set", "env")
        return value
    raise SecretError("neither a file nor an environment variable is named", "file")
