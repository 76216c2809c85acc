-- API keys with minimal scopes (issue 14): the space-separated scopes a key holds; NULL keeps the old meaning
-- (everything the upstream offers).
ALTER TABLE api_keys ADD COLUMN scope TEXT;
