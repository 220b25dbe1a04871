-- Backups (issue [3]): why a backup failed and who asked for it, the
-- environment names codeb knows, and an index for listing a project's
-- backups newest first (backup_list pages by (created_at, id)).
ALTER TABLE backups
    ADD COLUMN error     TEXT,
    ADD COLUMN principal TEXT NOT NULL DEFAULT '',
    ADD CONSTRAINT backups_environment CHECK (environment IN ('production', 'staging', 'preview')),
    ADD CONSTRAINT backups_path_unique UNIQUE (path);

CREATE INDEX backups_by_project ON backups (project_id, created_at DESC, id DESC);
