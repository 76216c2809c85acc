-- A revocation watermark: one counter that every revocation raises in the same transaction (by trigger, so no
-- code path can forget it). Replicas read this one row to learn whether anything was revoked since they last
-- looked, instead of re-checking every open stream's credential.
CREATE TABLE revocation_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL
);
INSERT INTO revocation_epoch (id, epoch) VALUES (1, 0);

CREATE TRIGGER api_key_revoked AFTER UPDATE OF revoked_at ON api_keys
WHEN NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL
BEGIN
    UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1;
END;

CREATE TRIGGER access_token_revoked AFTER UPDATE OF revoked_at ON access_tokens
WHEN NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL
BEGIN
    UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1;
END;

CREATE TRIGGER token_family_revoked AFTER UPDATE OF revoked_at ON token_families
WHEN NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL
BEGIN
    UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1;
END;

CREATE TRIGGER user_disabled AFTER UPDATE OF disabled_at ON users
WHEN NEW.disabled_at IS NOT NULL AND OLD.disabled_at IS NULL
BEGIN
    UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1;
END;

CREATE TRIGGER user_deleted AFTER DELETE ON users
BEGIN
    UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1;
END;

-- An operator revoking one client in every account finds its users without scanning.
CREATE INDEX token_families_client_id_idx ON token_families (client_id);
CREATE INDEX consents_client_id_idx ON consents (client_id);
CREATE INDEX browser_sessions_expires_at_idx ON browser_sessions (expires_at);
