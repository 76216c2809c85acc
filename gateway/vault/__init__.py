"""Connected services: a user's provider tokens in an encrypted vault, refreshed once, used through ``/v1/proxy``.

config.py        the ``services:`` section (presets ``google``, ``github``)
vault.py         Vault: seal, store, read, compare-and-set the tokens of each (user, service); the store API
refresh.py       the provider's token endpoint (RFC 6749 §6): refused for good vs. transient
singleflight.py  RefreshCoordinator: one refresh per connection at a time across replicas (Redis lock, fencing)
paths.py         the upstream URL of a proxied request, never outside ``api_base`` (SSRF)
proxy.py         the ``/v1/proxy/{service}/{path}`` handler
errors.py        the proxy's errors
setup.py         setup_vault(app): the VAULT app key (and the identity-token verification hook)
cli.py           ``mcp-gateway vault rotate-key``
connect.py       the dashboard's Connect / Reconnect / Disconnect and the connect link (``/account/connect/NAME``)
connect_app.py   an app's connect (``initiate`` with an identity token) and ``DELETE /v1/auth/{service}``
connect_view.py  the dashboard's "Connected services" lines
revoke.py        disconnect: RFC 7009 revocation at the provider, then the row deleted
listing.py       ``connected_services`` of identity tokens (the live connections)
exchange.py      RFC 8693 token exchange: an upstream's service key trades the upstream JWT for an identity token
"""
