-- Signing keys of the identity tokens (JWTs) the gateway issues. The public half is published at
-- /.well-known/jwks.json; the private half is stored only encrypted (AES-GCM) under an operator key from the
-- environment, named by encryption_key_id so that key can rotate too. Exactly one key is current (is_current = 1,
-- NULL otherwise: UNIQUE allows any number of NULLs); a retired key stays published until every token it signed
-- has expired, then it is deleted.
CREATE TABLE signing_keys (
    kid                   TEXT PRIMARY KEY,
    algorithm             TEXT NOT NULL,
    public_jwk            TEXT NOT NULL,
    encrypted_private_key TEXT NOT NULL,
    encryption_key_id     TEXT NOT NULL,
    created_at            REAL NOT NULL,
    retired_at            REAL,
    is_current            INTEGER UNIQUE CHECK (is_current = 1),
    CHECK ((is_current IS NULL) = (retired_at IS NOT NULL))
);
