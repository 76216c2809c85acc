"""MCP auth gateway: OAuth 2.1 and API keys in front of any MCP server."""

__version__ = "0.1.0"
