-- The app flow (/v1/auth/...): the callback URLs an API key allows (and, only when explicitly set, delivery of
-- the tokens in the callback URL), and the provider sign-ins in progress (the state is stored hashed). The app
-- flow's codes, refresh-token families and tokens reuse authorization_codes / token_families / refresh_tokens
-- (resource 'urn:mcp-gateway:identity-tokens', client_id = the API key's id).
CREATE TABLE api_key_apps (
    api_key_id    TEXT PRIMARY KEY REFERENCES api_keys (id) ON DELETE CASCADE,
    redirect_uris TEXT NOT NULL,
    tokens_in_url INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE app_sign_ins (
    state_hash    TEXT PRIMARY KEY,
    provider      TEXT NOT NULL,
    api_key_id    TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    redirect_uri  TEXT NOT NULL,
    app_state     TEXT,
    code_verifier TEXT,
    nonce         TEXT,
    created_at    REAL NOT NULL,
    expires_at    REAL NOT NULL,
    used_at       REAL
);

CREATE INDEX app_sign_ins_expires_at_idx ON app_sign_ins (expires_at);
