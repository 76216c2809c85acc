-- OAuth 2.1 authorization server: registered clients, pending authorizations, codes, token families and
-- their tokens, remembered consents and browser login sessions. Secrets are stored as SHA-256 hex digests;
-- times are epoch seconds from the gateway's clock.

CREATE TABLE oauth_clients (
    client_id        TEXT PRIMARY KEY,
    client_name      TEXT,
    redirect_uris    TEXT NOT NULL,  -- JSON array of strings
    grant_types      TEXT NOT NULL,  -- JSON array of strings
    response_types   TEXT NOT NULL,  -- JSON array of strings
    scope            TEXT,
    application_type TEXT NOT NULL,
    client_uri       TEXT,
    logo_uri         TEXT,
    metadata_hash    TEXT NOT NULL,
    created_at       REAL NOT NULL,
    last_used_at     REAL,
    CONSTRAINT oauth_clients_metadata_hash_key UNIQUE (metadata_hash)
);

-- The reaper deletes clients never used and created long ago.
CREATE INDEX oauth_clients_unused_created_at_idx ON oauth_clients (created_at) WHERE last_used_at IS NULL;

CREATE TABLE authorization_requests (
    request_hash       TEXT PRIMARY KEY,
    browser_hash       TEXT NOT NULL,
    csrf_hash          TEXT NOT NULL,
    client_id          TEXT NOT NULL,
    redirect_uri       TEXT NOT NULL,
    redirect_uri_given INTEGER NOT NULL,
    state              TEXT,
    code_challenge     TEXT NOT NULL,
    scope              TEXT NOT NULL,
    resource           TEXT NOT NULL,
    created_at         REAL NOT NULL,
    expires_at         REAL NOT NULL,
    user_id            TEXT REFERENCES users (id) ON DELETE CASCADE,
    completed_at       REAL
);

CREATE INDEX authorization_requests_expires_at_idx ON authorization_requests (expires_at);
CREATE INDEX authorization_requests_user_id_idx ON authorization_requests (user_id);

CREATE TABLE token_families (
    family_id      TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    scope          TEXT NOT NULL,
    resource       TEXT NOT NULL,
    created_at     REAL NOT NULL,
    expires_at     REAL NOT NULL,
    last_used_at   REAL,
    revoked_at     REAL,
    revoked_reason TEXT
);

-- (user_id, client_id) also serves lookups by user_id alone.
CREATE INDEX token_families_user_id_client_id_idx ON token_families (user_id, client_id);
CREATE INDEX token_families_expires_at_idx ON token_families (expires_at);

CREATE TABLE authorization_codes (
    code_hash          TEXT PRIMARY KEY,
    client_id          TEXT NOT NULL,
    user_id            TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    redirect_uri       TEXT NOT NULL,
    redirect_uri_given INTEGER NOT NULL,
    code_challenge     TEXT NOT NULL,
    scope              TEXT NOT NULL,
    resource           TEXT NOT NULL,
    created_at         REAL NOT NULL,
    expires_at         REAL NOT NULL,
    used_at            REAL,
    -- Deferred: redeeming claims the code (setting family_id) before inserting the family, in one transaction.
    family_id          TEXT REFERENCES token_families (family_id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    failed_attempts    INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX authorization_codes_expires_at_idx ON authorization_codes (expires_at);
CREATE INDEX authorization_codes_family_id_idx ON authorization_codes (family_id);
CREATE INDEX authorization_codes_user_id_client_id_idx ON authorization_codes (user_id, client_id);

CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id  TEXT NOT NULL REFERENCES token_families (family_id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL,
    scope      TEXT NOT NULL,
    resource   TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL
);

CREATE INDEX access_tokens_family_id_idx ON access_tokens (family_id);
CREATE INDEX access_tokens_expires_at_idx ON access_tokens (expires_at);
CREATE INDEX access_tokens_user_id_idx ON access_tokens (user_id);

CREATE TABLE refresh_tokens (
    token_hash    TEXT PRIMARY KEY,
    family_id     TEXT NOT NULL REFERENCES token_families (family_id) ON DELETE CASCADE,
    generation    INTEGER NOT NULL,
    created_at    REAL NOT NULL,
    expires_at    REAL NOT NULL,
    used_at       REAL,
    grace_until   REAL,
    grace_blob    BLOB,
    grace_replays INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX refresh_tokens_family_id_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expires_at_idx ON refresh_tokens (expires_at);

CREATE TABLE consents (
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id    TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    resource     TEXT NOT NULL,
    scope        TEXT NOT NULL,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    PRIMARY KEY (user_id, client_id, redirect_uri, resource)
);

CREATE TABLE browser_sessions (
    session_hash TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   REAL NOT NULL,
    last_seen_at REAL NOT NULL,
    expires_at   REAL NOT NULL,
    revoked_at   REAL
);

CREATE INDEX browser_sessions_user_id_idx ON browser_sessions (user_id);
