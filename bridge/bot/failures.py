"""Whether a failed send is worth trying again: the homeserver's answer sorted into transient or permanent.

Rule 1. Transient: no answer at all (connection refused or reset, a timeout), 429 / ``M_LIMIT_EXCEEDED``,
        any 5xx (including a proxy's 502 page that is not JSON), and the bot's own token being refused (an
        operator fixes that; the messages must still go out afterwards). The outbox entry stays and is
        retried under the one retry policy, with the server's ``retry_after_ms`` as the least wait.
Rule 2. Permanent: the room is not one the bot can send to (it is not in it, it is gone, or the server
        forbids it) or the request itself is wrong (other 4xx): sending again can never succeed. The entry
        goes to the dead letters with the reason, for ``bridge status``.
"""

from __future__ import annotations

_OWN_TOKEN = frozenset({"M_UNKNOWN_TOKEN", "M_MISSING_TOKEN", "M_USER_LOCKED"})


class SendFailed(Exception):
    """A send the homeserver did not accept; ``status`` is the HTTP status (None: no answer)."""

    def __init__(
        self,
        what: str,
        status: int | None,
        errcode: str | None,
        message: str,
        retry_after_ms: int | None = None,
    ) -> None:
        self.what, self.status, self.errcode, self.message = what, status, errcode, message
        self.retry_after_ms = retry_after_ms
        super().__init__(what)

    def __str__(self) -> str:
        code = " ".join(str(x) for x in (self.status, self.errcode) if x is not None) or "no answer"
        return f"{self.what}: {code}: {self.message}"

    @property
    def transient(self) -> bool:
        return is_transient(self.status, self.errcode)


def is_transient(status: int | None, errcode: str | None) -> bool:
    if status is None or status == 429 or status >= 500 or errcode == "M_LIMIT_EXCEEDED":
        return True
    return errcode in _OWN_TOKEN


class NotInRoom(Exception):
    """The bot is not (and will not be) in the room a message is for: permanent."""


class Defer(Exception):
    """Not a failure: the entry may go out only in ``seconds`` (a throttle); its lane waits, slot freed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"deferred {seconds:.1f} s")
