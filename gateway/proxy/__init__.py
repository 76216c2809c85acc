"""The MCP reverse proxy: Streamable HTTP at ``/mcp`` and legacy HTTP+SSE at ``/mcp/sse``."""
