-- A revocation watermark: one counter that every revocation raises in the same transaction (by trigger, so no
-- code path can forget it). Replicas read this one row to learn whether anything was revoked since they last
-- looked, instead of re-checking every open stream's credential. The triggers are deferred to commit time, when
-- the transaction needs no further row locks, so raising the one shared row cannot deadlock with another
-- revocation.
CREATE TABLE revocation_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL
);
INSERT INTO revocation_epoch (id, epoch) VALUES (1, 0);

CREATE FUNCTION bump_revocation_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER api_key_revoked AFTER UPDATE OF revoked_at ON api_keys DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
WHEN (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL) EXECUTE FUNCTION bump_revocation_epoch();

CREATE CONSTRAINT TRIGGER access_token_revoked AFTER UPDATE OF revoked_at ON access_tokens DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
WHEN (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL) EXECUTE FUNCTION bump_revocation_epoch();

CREATE CONSTRAINT TRIGGER token_family_revoked AFTER UPDATE OF revoked_at ON token_families DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
WHEN (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL) EXECUTE FUNCTION bump_revocation_epoch();

CREATE CONSTRAINT TRIGGER user_disabled AFTER UPDATE OF disabled_at ON users DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
WHEN (NEW.disabled_at IS NOT NULL AND OLD.disabled_at IS NULL) EXECUTE FUNCTION bump_revocation_epoch();

CREATE CONSTRAINT TRIGGER user_deleted AFTER DELETE ON users DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
EXECUTE FUNCTION bump_revocation_epoch();

-- An operator revoking one client in every account finds its users without scanning.
CREATE INDEX token_families_client_id_idx ON token_families (client_id);
CREATE INDEX consents_client_id_idx ON consents (client_id);
CREATE INDEX browser_sessions_expires_at_idx ON browser_sessions (expires_at);
