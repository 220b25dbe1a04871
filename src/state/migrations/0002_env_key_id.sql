-- Env versions record which master key encrypted them (a short keyed id,
-- never the key), so a wrong key is named as such instead of failing as
-- "corrupt data", and codeb can refuse to start with the wrong key.
ALTER TABLE env_versions ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
CREATE INDEX env_versions_latest ON env_versions (project_id, environment, version DESC);
