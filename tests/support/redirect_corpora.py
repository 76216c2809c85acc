"""Redirect URIs that are not exactly ``REGISTERED`` (security-cases 22): simple string comparison, no prefix,
subset-of-query, case, path or whitespace normalisation. Used by the matcher's unit tests and over HTTP."""

REGISTERED = "https://c.example/cb?x=1"

NOT_EXACTLY_REGISTERED = [
    "https://c.example/cb123?x=1",
    "https://c.example/cb/?x=1",
    "https://c.example/CB?x=1",
    "https://C.example/cb?x=1",
    "https://c.example/cb?x=1&y=2",
    "https://c.example/cb?x=2",
    "https://c.example/cb",
    "https://c.example/cb;evil=1?x=1",
    "https://c.example/cb?x=1#f",
    "https://c.example/cb/..;/admin?x=1",
    "https://c.example/cb/%2e%2e/admin?x=1",
    "https://c.example:444/cb?x=1",
    "https://c.example:443/cb?x=1",
    "http://c.example/cb?x=1",
    "https://evil@c.example/cb?x=1",
    "https://c.example.evil.com/cb?x=1",
    "",
    "https://C.EXAMPLE/cb?x=1",
    " https://c.example/cb?x=1",
    "https://c.example/cb?x=1 ",
]
