"""An example MCP server that knows nothing about auth, for the gateway to front.

Run it with ``python -m upstream_mcp --host 127.0.0.1 --port 0``; see ``upstream_mcp.server``
for the tools, resources and prompts it offers and for the ASGI app that serves them.
"""

from upstream_mcp.server import READY_LINE_PREFIX, build_app, create_server, transport_security

__all__ = ["READY_LINE_PREFIX", "build_app", "create_server", "transport_security"]
