"""Errors raised by the homeserver client (:mod:`bridge.matrix.client`), one tree for that boundary.

The whole tree::

    HomeserverError                  anything the homeserver boundary raises
    ├── MatrixError                  an error answer (status, errcode, message, method, path)
    │   ├── MAuthError               our own credentials are refused: stop the run, don't retry
    │   │   ├── MUnknownToken        M_UNKNOWN_TOKEN  token revoked, expired or wrong server (soft_logout)
    │   │   ├── MMissingToken        M_MISSING_TOKEN  no token sent
    │   │   └── MUserLocked          M_USER_LOCKED    the provisioning account itself is locked
    │   ├── MForbidden               M_FORBIDDEN      not allowed (not an admin, not in the room, ...)
    │   ├── MNotFound                M_NOT_FOUND      no such user, room, alias, state or account data
    │   ├── MUnrecognized            M_UNRECOGNIZED   no such endpoint (e.g. admin API on the public port)
    │   ├── MLimitExceeded           M_LIMIT_EXCEEDED rate limited, still after the retries (retry_after_ms)
    │   ├── MUserInUse               M_USER_IN_USE
    │   ├── MRoomInUse               M_ROOM_IN_USE    an alias is taken (also after a 429 that had succeeded)
    │   ├── MUserDeactivated         M_USER_DEACTIVATED
    │   ├── MInvalidUsername         M_INVALID_USERNAME
    │   ├── MExclusive               M_EXCLUSIVE      an application service owns that namespace
    │   ├── MBadJson                 M_BAD_JSON       the request body has the wrong shape
    │   ├── MNotJson                 M_NOT_JSON
    │   ├── MInvalidParam            M_INVALID_PARAM
    │   ├── MMissingParam            M_MISSING_PARAM
    │   ├── MTooLarge                M_TOO_LARGE, M_PROFILE_TOO_LARGE, M_KEY_TOO_LARGE
    │   ├── MResourceLimitExceeded   M_RESOURCE_LIMIT_EXCEEDED (monthly active user cap)
    │   ├── MUnsupportedRoomVersion  M_UNSUPPORTED_ROOM_VERSION
    │   ├── MGuestAccessForbidden    M_GUEST_ACCESS_FORBIDDEN
    │   └── MUnknown                 M_UNKNOWN, or an error without an errcode (a plain 500, a proxy page)
    ├── ServerUnavailable            502/503/504 or connection errors, still after the retries; or a request
    │                                that may have reached the server and must not be replayed (see
    │                                ``maybe_applied``)
    └── UnexpectedResponse           a 2xx whose body is not the JSON shape the API documents

An errcode without a class of its own raises plain :class:`MatrixError` with that ``errcode``. Messages name
the method and the path (which carries user and room ids, never the access token) so a report line says
what failed and where.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class HomeserverError(Exception):
    """Base of every error the homeserver client raises."""


class MatrixError(HomeserverError):
    """The homeserver answered ``status`` with a Matrix error body."""

    def __init__(
        self,
        status: int,
        errcode: str,
        message: str,
        *,
        method: str = "",
        path: str = "",
        body: Mapping[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.errcode = errcode
        self.message = message
        self.method = method
        self.path = path
        # Other fields of the error body (e.g. ``soft_logout``); errors never carry request headers.
        self.extra: dict[str, Any] = {k: v for k, v in (body or {}).items() if k not in ("errcode", "error")}
        where = f"{method} {path}: " if method else ""
        super().__init__(f"{where}{status} {errcode}: {message}")


class MAuthError(MatrixError):
    """The client's own credentials were refused; callers stop the whole run on this."""


class MUnknownToken(MAuthError):
    @property
    def soft_logout(self) -> bool:
        return bool(self.extra.get("soft_logout", False))


class MMissingToken(MAuthError):
    pass


class MUserLocked(MAuthError):
    pass


class MForbidden(MatrixError):
    pass


class MNotFound(MatrixError):
    pass


class MUnrecognized(MatrixError):
    pass


class MLimitExceeded(MatrixError):
    @property
    def retry_after_ms(self) -> int | None:
        value = self.extra.get("retry_after_ms")
        return int(value) if isinstance(value, int | float) else None


class MUserInUse(MatrixError):
    pass


class MRoomInUse(MatrixError):
    pass


class MUserDeactivated(MatrixError):
    pass


class MInvalidUsername(MatrixError):
    pass


class MExclusive(MatrixError):
    pass


class MBadJson(MatrixError):
    pass


class MNotJson(MatrixError):
    pass


class MInvalidParam(MatrixError):
    pass


class MMissingParam(MatrixError):
    pass


class MTooLarge(MatrixError):
    pass


class MResourceLimitExceeded(MatrixError):
    pass


class MUnsupportedRoomVersion(MatrixError):
    pass


class MGuestAccessForbidden(MatrixError):
    pass


class MUnknown(MatrixError):
    pass


class ServerUnavailable(HomeserverError):
    """The server could not be reached or kept failing with 502/503/504.

    ``attempts`` is how many times the request was sent. ``maybe_applied`` is true when a non-idempotent
    request may have reached the server before the failure (so it was not replayed): the caller must check
    the server's state before trying again.
    """

    def __init__(self, message: str, *, method: str, path: str, attempts: int, maybe_applied: bool) -> None:
        self.method = method
        self.path = path
        self.attempts = attempts
        self.maybe_applied = maybe_applied
        super().__init__(f"{method} {path}: {message} (after {attempts} attempt(s))")


class UnexpectedResponse(HomeserverError):
    """A successful status with a body this client cannot parse (wrong server, proxy page, API change)."""

    def __init__(self, message: str, *, method: str, path: str) -> None:
        self.method = method
        self.path = path
        super().__init__(f"{method} {path}: {message}")


ERRCODE_CLASSES: Mapping[str, type[MatrixError]] = {
    "M_UNKNOWN_TOKEN": MUnknownToken,
    "M_MISSING_TOKEN": MMissingToken,
    "M_USER_LOCKED": MUserLocked,
    "M_FORBIDDEN": MForbidden,
    "M_NOT_FOUND": MNotFound,
    "M_UNRECOGNIZED": MUnrecognized,
    "M_LIMIT_EXCEEDED": MLimitExceeded,
    "M_USER_IN_USE": MUserInUse,
    "M_ROOM_IN_USE": MRoomInUse,
    "M_USER_DEACTIVATED": MUserDeactivated,
    "M_INVALID_USERNAME": MInvalidUsername,
    "M_EXCLUSIVE": MExclusive,
    "M_BAD_JSON": MBadJson,
    "M_NOT_JSON": MNotJson,
    "M_INVALID_PARAM": MInvalidParam,
    "M_MISSING_PARAM": MMissingParam,
    "M_TOO_LARGE": MTooLarge,
    "M_PROFILE_TOO_LARGE": MTooLarge,
    "M_KEY_TOO_LARGE": MTooLarge,
    "M_RESOURCE_LIMIT_EXCEEDED": MResourceLimitExceeded,
    "M_UNSUPPORTED_ROOM_VERSION": MUnsupportedRoomVersion,
    "M_GUEST_ACCESS_FORBIDDEN": MGuestAccessForbidden,
    "M_UNKNOWN": MUnknown,
}


def matrix_error(
    status: int, body: Mapping[str, Any] | None, *, method: str = "", path: str = ""
) -> MatrixError:
    """Build the exception for an error response; a body without an errcode becomes :class:`MUnknown`."""
    body = body or {}
    errcode = body.get("errcode")
    message = body.get("error")
    if not isinstance(errcode, str):
        errcode = "M_UNKNOWN"
    if not isinstance(message, str):
        message = f"HTTP {status}"
    cls = ERRCODE_CLASSES.get(errcode, MatrixError)
    return cls(status, errcode, message, method=method, path=path, body=body)
