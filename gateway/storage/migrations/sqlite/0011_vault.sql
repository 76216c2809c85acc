-- The vault: a user's provider tokens for each connected service (/v1/proxy/{service}/...). The access and refresh
-- tokens are only in sealed_tokens: AES-256-GCM under the operator key encryption_key_id (identity.encryption_keys),
-- with "user_id/service" as associated data so a blob cannot be moved to another row. version is the fencing token
-- of refreshes: every write of the tokens is a compare-and-set on it.
CREATE TABLE vault_connections (
    user_id             TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service             TEXT NOT NULL,
    sealed_tokens       TEXT NOT NULL,
    encryption_key_id   TEXT NOT NULL,
    expires_at          REAL,
    scopes              TEXT NOT NULL,
    provider_account_id TEXT NOT NULL,
    provider_email      TEXT,
    status              TEXT NOT NULL CHECK (status IN ('connected', 'broken')),
    version             INTEGER NOT NULL,
    created_at          REAL NOT NULL,
    updated_at          REAL NOT NULL,
    last_used_at        REAL,
    PRIMARY KEY (user_id, service)
);
