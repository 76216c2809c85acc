"""Per-tool authorization: named scopes, ordered rules, enforcement on the MCP endpoints, filtered lists."""
