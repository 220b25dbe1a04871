-- Approvals of critical operations (issue [5], DESIGN §6). One row per
-- confirmation codeb asked for: `approval` waits for a second admin key
-- (approve), `confirmation` for the human answering an input-required
-- elicitation (2026-07-28 clients). Both are single-use: a row leaves
-- `pending` exactly once. The plan (names and fingerprints only, never
-- secret values) is kept so approvers see what they approve.
ALTER TABLE approvals
    ADD COLUMN kind                TEXT NOT NULL DEFAULT 'approval'
                                   CONSTRAINT approvals_kind CHECK (kind IN ('approval', 'confirmation')),
    ADD COLUMN project             TEXT NOT NULL DEFAULT '',
    ADD COLUMN summary             TEXT NOT NULL DEFAULT '',
    ADD COLUMN plan                JSONB NOT NULL DEFAULT '{}',
    ADD COLUMN requested_principal TEXT NOT NULL DEFAULT '',
    ADD COLUMN approved_principal  TEXT,
    ADD COLUMN error               TEXT,
    ADD COLUMN result              JSONB;

ALTER TABLE approvals DROP CONSTRAINT approvals_status;
ALTER TABLE approvals ADD CONSTRAINT approvals_status CHECK (status IN
    ('pending', 'approved', 'executed', 'failed', 'refused', 'expired', 'declined'));

CREATE INDEX approvals_by_team ON approvals (team_id, created_at DESC, id DESC);
