"""Which client-API paths may be called without an access token: data, read by the reverse proxy renderer.

Everything under ``/_matrix/`` needs a token except these paths (regular expressions over the decoded path,
as nginx's ``$uri`` holds it). They are what a client must reach *before* it has a token: discover the
server's versions and login flows, log in, refresh a token. Registration is not here: there is none.
Cross-origin preflight requests (``OPTIONS``) never carry a token and are let through by the proxy itself.
"""

from __future__ import annotations

PUBLIC_CLIENT_PATHS: tuple[str, ...] = (
    # Every client's first request: which spec versions the server speaks.
    r"^/_matrix/client/versions$",
    # GET lists the login flows, POST logs in with the directory password.
    r"^/_matrix/client/(r0|v3)/login$",
    # A refresh token is sent in the body, not as a bearer token.
    r"^/_matrix/client/(r0|v3|v1)/refresh$",
    # Element asks whether the server delegates login to an OpenID provider before showing its login form;
    # Synapse answers 404 (it does not), and the client then shows the password form.
    r"^/_matrix/client/(v1|unstable/org\.matrix\.msc2965)/auth_(metadata|issuer)$",
)

# Outside /_matrix/: served by the proxy itself or by Synapse's unauthenticated health check.
PUBLIC_OTHER_PATHS: tuple[str, ...] = (
    r"^/\.well-known/matrix/(client|server)$",
    r"^/health$",
)
