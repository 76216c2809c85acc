"""Administration over HTTP: the admin API, guarded by the ``admin`` role (``mcp-gateway users set-role``).

Its routes are in ``gateway.routes``."""
