"""One Matrix client for every HTTP call the project makes.

:mod:`~bridge.matrix.retry` (the one retry policy), :mod:`~bridge.matrix.transport` (requests as data, the
one send loop), :mod:`~bridge.matrix.responses` (typed answers), :mod:`~bridge.matrix.client_api` and
:mod:`~bridge.matrix.admin_api`, gathered in :class:`bridge.matrix.client.HomeserverClient`, and
:mod:`~bridge.matrix.errors` (the errcode → exception tree). Used by the provisioner, the event bot's
plain-HTTP calls and the services. Beside it, :mod:`~bridge.matrix.contract` (the names the provisioner and
the runtime agree on) and :mod:`~bridge.matrix.secrets` (the one reader of tokens and passwords). This
``__init__`` imports nothing, so the pure core can use :mod:`bridge.matrix.contract` without pulling in
aiohttp.
"""
