-- Each account has a plan (NULL: the configured default plan).
ALTER TABLE users ADD COLUMN plan TEXT;
