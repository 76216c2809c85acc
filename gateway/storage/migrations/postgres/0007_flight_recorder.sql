-- The flight recorder's trail (gateway.flight) when no Redis is configured: recent connection steps filed by
-- subject (c:<client id>, a:<account id>, i:<address>). Ids, codes and short descriptions only, never a secret.
CREATE TABLE flight_steps (
    id BIGSERIAL PRIMARY KEY,
    subject    TEXT NOT NULL,
    at         DOUBLE PRECISION NOT NULL,
    step       TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    detail     TEXT NOT NULL,
    client_id  TEXT,
    account_id TEXT,
    count      INTEGER NOT NULL
);
CREATE INDEX flight_steps_by_subject ON flight_steps (subject, at);
CREATE INDEX flight_steps_by_age ON flight_steps (at);
