-- Accounts and the dashboard: a role per user ('user' or 'admin') and admitted MCP requests per account and
-- UTC day (the dashboard's usage chart), written as additive batches.
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'user';

CREATE TABLE usage_daily (
    user_id  TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day      TEXT NOT NULL,  -- YYYY-MM-DD, UTC
    requests INTEGER NOT NULL,
    PRIMARY KEY (user_id, day)
);
