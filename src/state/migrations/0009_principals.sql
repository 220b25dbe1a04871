-- Two people means two principals (issue [6] findings 4 and 7, DESIGN §6).
--
-- Every API key belongs to a principal: the person or CI system it was
-- made for (`alice@example.com`, `ci-deploy`). An approval needs a
-- different principal than the request, not only a different key, so one
-- person holding two keys can no longer approve their own request.
-- Keys also record who made them: the creating key and its principal
-- (NULL for keys made with `codeb key create` on the codeb machine, whose
-- principal is the operator there).
--
-- Keys made before this migration did not say whom they belong to. They
-- all get the principal `legacy`: every such key counts as the SAME person,
-- so no two of them can confirm each other's critical requests (fail
-- closed). An owner re-issues keys with `key_create` / `codeb key create
-- --principal NAME` for the people who approve, then revokes the old ones.
ALTER TABLE api_keys
    ADD COLUMN principal            TEXT NOT NULL DEFAULT 'legacy',
    ADD COLUMN created_by           UUID REFERENCES api_keys (id),
    ADD COLUMN created_by_principal TEXT;
-- From now on every insert names the principal.
ALTER TABLE api_keys ALTER COLUMN principal DROP DEFAULT;

-- Approvals bind the project row (not only its name) and name the
-- principals on both sides: a project deleted and created again under the
-- same name — by the same team or another — is another project, and no
-- approval of the old one applies to it.
ALTER TABLE approvals
    ADD COLUMN project_id BIGINT,
    ADD COLUMN requester  TEXT NOT NULL DEFAULT 'legacy',
    ADD COLUMN approver   TEXT;
ALTER TABLE approvals ALTER COLUMN requester DROP DEFAULT;

-- The database's own guard of the rule above: an approval (not the
-- requester's own confirmation in their client) is decided by another
-- principal than the one who asked.
ALTER TABLE approvals ADD CONSTRAINT approvals_second_principal
    CHECK (kind <> 'approval' OR approver IS NULL OR approver <> requester);

-- Pending requests from before this migration bind neither the project id
-- nor the requesting principal: they expire now and are asked for again.
UPDATE approvals SET status = 'expired', decided_at = now() WHERE status = 'pending';
