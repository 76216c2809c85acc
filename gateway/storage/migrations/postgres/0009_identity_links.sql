-- Accounts at third-party identity providers (identity_providers.NAME) linked to gateway accounts. provider is
-- the provider's issuer (stable when the configured name changes); subject its user id there. One provider account
-- links to one gateway account; a gateway account may have several. email is the verified address the provider
-- gave at the last sign-in (for display); accounts sign in with a provider only through this table, or link on
-- their first sign-in through a verified e-mail.
CREATE TABLE identity_links (
    provider     TEXT NOT NULL,
    subject      TEXT NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email        TEXT,
    linked_at    DOUBLE PRECISION NOT NULL,
    last_used_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX identity_links_user_id ON identity_links (user_id);

-- Sign-ins with a provider under way: what the callback needs (PKCE verifier, nonce), keyed by the SHA-256 of the
-- state sent to the provider, bound to the browser that started it (SHA-256 of its binding cookie), taken once.
-- return_to says where the person continues (the OAuth flow's pending request, or the dashboard).
CREATE TABLE identity_sign_ins (
    state_hash    TEXT PRIMARY KEY,
    browser_hash  TEXT NOT NULL,
    provider      TEXT NOT NULL,
    code_verifier TEXT,
    nonce         TEXT,
    redirect_uri  TEXT NOT NULL,
    return_to     TEXT NOT NULL,
    created_at    DOUBLE PRECISION NOT NULL
);
CREATE INDEX identity_sign_ins_created_at ON identity_sign_ins (created_at);
