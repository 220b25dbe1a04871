-- A deploy records the digest of the image it pulled and ran (DESIGN §6):
-- production deploys the digest staging ran healthy, so a tag pushed over
-- after staging never reaches production unnoticed. Deployments made
-- before this migration have none (such a tag is staged again).
ALTER TABLE deployments
    ADD COLUMN image_digest TEXT
        CONSTRAINT deployments_image_digest_format
        CHECK (image_digest IS NULL OR image_digest ~ '^sha256:[0-9a-f]{64}$');

-- The production policy's lookups: healthy staging deploys by digest.
CREATE INDEX deployments_staged_digest ON deployments (project_id, image_digest)
    WHERE environment = 'staging' AND operation = 'deploy' AND status = 'succeeded';
