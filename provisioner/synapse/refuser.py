"""The public listener's admin-API refuser, imported by the Synapse process (Rule 2 of
:mod:`provisioner.synapse.config`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.web.resource import Resource


_UNRECOGNIZED = json.dumps({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}).encode()


def admin_api_refuser(config: Mapping[str, Any], module_api: object) -> Resource:
    """Synapse ``additional_resources`` factory: a leaf that answers every admin path with 404.

    ``isLeaf`` makes Twisted hand every sub-path (``/_synapse/admin/v1/...``) to this one resource, so no
    admin servlet is reachable on the listener that mounts it. Twisted is imported here, inside the
    Synapse process, so importing this module elsewhere does not need it.
    """
    from twisted.web.resource import Resource

    class _AdminRefuser(Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"application/json")
            request.setHeader(b"Access-Control-Allow-Origin", b"*")
            return _UNRECOGNIZED

    # Twisted leaves Resource.__init__ unannotated.
    return _AdminRefuser()  # type: ignore[no-untyped-call]
