"""The REST API of Azure SignalR Service's data plane, served by hubplane under ``/api``.

``api.RestApi`` is the ASGI app (``--rest-access-key``); the rooms: ``request`` (parsing,
limits, replies), ``auth`` (the bearer token and its audience), ``hubnames`` (hub names),
``routes`` (paths to handlers), ``body`` (JSON and MessagePack bodies), and one module of
handlers per kind of call. docs/rest-api.md describes the API.
"""
