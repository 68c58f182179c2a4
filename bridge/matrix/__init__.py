"""One Matrix client for every HTTP call the project makes: requests as data, one transport with the one
retry policy, typed responses, the client and admin APIs, and the errcode → exception tree. Used by the
provisioner, the event bot's plain-HTTP calls and the services. Beside it, :mod:`~bridge.matrix.contract`
(the names the provisioner and the runtime agree on) and :mod:`~bridge.matrix.secrets` (the one reader of
tokens and passwords). This ``__init__`` imports nothing, so the pure core can use
:mod:`bridge.matrix.contract` without pulling in aiohttp."""
