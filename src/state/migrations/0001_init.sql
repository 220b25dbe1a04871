-- codeb state schema, version 1: the whole data model of DESIGN.md.
-- Never edit this file once landed; add a new numbered migration instead.
-- Names of constraints matter: src/state maps violations to domain errors
-- by constraint name.

-- Teams own projects and API keys (DESIGN §6).
CREATE TABLE teams (
    id          TEXT PRIMARY KEY
                CONSTRAINT teams_id_format CHECK (id ~ '^[a-z][a-z0-9-]{1,30}[a-z0-9]$'),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The local operator's team; stdio callers and the CLI act for it by default.
INSERT INTO teams (id) VALUES ('default');

-- Projects (DESIGN §2). Soft-deleted rows keep their history.
CREATE TABLE projects (
    id              BIGSERIAL PRIMARY KEY,
    name            TEXT NOT NULL
                    CONSTRAINT projects_name_format CHECK (name ~ '^[a-z][a-z0-9-]{1,30}[a-z0-9]$'),
    team_id         TEXT NOT NULL REFERENCES teams (id),
    kind            TEXT NOT NULL DEFAULT 'node',
    container_port  INTEGER NOT NULL DEFAULT 3000
                    CONSTRAINT projects_container_port_range CHECK (container_port BETWEEN 1 AND 65535),
    health_path     TEXT NOT NULL DEFAULT '/health',
    memory_limit    TEXT NOT NULL DEFAULT '512m',
    cpu_limit       TEXT NOT NULL DEFAULT '1',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at      TIMESTAMPTZ
);
CREATE UNIQUE INDEX projects_name_unique ON projects (name) WHERE deleted_at IS NULL;

-- One row per (project, environment) with its port pair: blue = base_port,
-- green = base_port + 1. Ports are allocated once, lowest free pair first;
-- uniqueness is the database's job, not the allocator's.
CREATE TABLE project_environments (
    project_id   BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    environment  TEXT NOT NULL
                 CONSTRAINT project_environments_environment CHECK (environment IN ('production', 'staging', 'preview')),
    base_port    INTEGER NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, environment),
    CONSTRAINT project_environments_port_unique UNIQUE (base_port),
    CONSTRAINT project_environments_port_even CHECK (base_port % 2 = 0),
    CONSTRAINT project_environments_port_range CHECK (
        (environment = 'production' AND base_port BETWEEN 4100 AND 4498) OR
        (environment = 'staging'    AND base_port BETWEEN 4500 AND 4998) OR
        (environment = 'preview'    AND base_port BETWEEN 5000 AND 5498))
);

-- Slots: empty -> deployed -> active -> grace -> active | empty (DESIGN §2).
CREATE TABLE slots (
    project_id        BIGINT NOT NULL,
    environment       TEXT NOT NULL,
    slot              TEXT NOT NULL CONSTRAINT slots_slot_name CHECK (slot IN ('blue', 'green')),
    state             TEXT NOT NULL DEFAULT 'empty'
                      CONSTRAINT slots_state CHECK (state IN ('empty', 'deployed', 'active', 'grace')),
    image             TEXT,
    deployment_id     UUID,
    env_version       INTEGER,
    grace_expires_at  TIMESTAMPTZ,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, environment, slot),
    FOREIGN KEY (project_id, environment)
        REFERENCES project_environments (project_id, environment) ON DELETE CASCADE,
    CONSTRAINT slots_grace_has_expiry CHECK (state <> 'grace' OR grace_expires_at IS NOT NULL)
);
-- At most one active slot per (project, environment).
CREATE UNIQUE INDEX slots_one_active ON slots (project_id, environment) WHERE state = 'active';

-- Every operation is a deployment record with a durable id (DESIGN §2, §7).
CREATE TABLE deployments (
    id                UUID PRIMARY KEY,
    project_id        BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    environment       TEXT NOT NULL,
    operation         TEXT NOT NULL CONSTRAINT deployments_operation CHECK (operation IN (
                          'deploy', 'promote', 'rollback', 'slot_cleanup', 'env_sync',
                          'domain_setup', 'domain_delete', 'backup_create', 'backup_restore',
                          'project_create', 'project_delete')),
    slot              TEXT,
    image             TEXT,
    env_version       INTEGER,
    status            TEXT NOT NULL DEFAULT 'running'
                      CONSTRAINT deployments_status CHECK (status IN ('running', 'succeeded', 'failed', 'recovered')),
    idempotency_key   TEXT,
    principal         TEXT NOT NULL,
    reason            TEXT,
    error             TEXT,
    result            JSONB,
    -- Lease: the owner renews lease_expires_at while it works; a crashed
    -- owner's lease runs out and the row is marked recovered. The fencing
    -- token grows with every new lease so a stale owner's writes are refused.
    lease_owner       TEXT,
    lease_expires_at  TIMESTAMPTZ,
    fencing_token     BIGINT NOT NULL DEFAULT 0,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at       TIMESTAMPTZ
);
-- One running operation per (project, environment).
CREATE UNIQUE INDEX deployments_one_running ON deployments (project_id, environment) WHERE status = 'running';
CREATE UNIQUE INDEX deployments_idempotency ON deployments (project_id, environment, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX deployments_by_project ON deployments (project_id, created_at DESC);
CREATE SEQUENCE deployments_fencing_seq;

-- The step journal of an operation: what ran where, how it ended.
CREATE TABLE deployment_steps (
    deployment_id  UUID NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    seq            INTEGER NOT NULL,
    step           TEXT NOT NULL,
    server         TEXT,
    argv           JSONB NOT NULL DEFAULT '[]',
    exit_status    INTEGER,
    stderr_tail    TEXT,
    duration_ms    INTEGER,
    started_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (deployment_id, seq)
);

-- Environment variables, encrypted at rest, versioned (DESIGN §3).
CREATE TABLE env_versions (
    project_id    BIGINT NOT NULL,
    environment   TEXT NOT NULL,
    version       INTEGER NOT NULL CONSTRAINT env_versions_positive CHECK (version > 0),
    ciphertext    BYTEA NOT NULL,
    nonce         BYTEA NOT NULL,
    -- Key names, protected flags and short SHA-256 fingerprints; never values.
    keys          JSONB NOT NULL DEFAULT '[]',
    created_by    TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    synced_at     TIMESTAMPTZ,
    PRIMARY KEY (project_id, environment, version),
    FOREIGN KEY (project_id, environment)
        REFERENCES project_environments (project_id, environment) ON DELETE CASCADE
);

-- Domains routed to a (project, environment) (DESIGN §4).
CREATE TABLE domains (
    hostname      TEXT PRIMARY KEY,
    project_id    BIGINT NOT NULL,
    environment   TEXT NOT NULL,
    kind          TEXT NOT NULL CONSTRAINT domains_kind CHECK (kind IN ('managed', 'custom', 'preview')),
    dns_state     TEXT NOT NULL DEFAULT 'pending',
    route_state   TEXT NOT NULL DEFAULT 'pending',
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    FOREIGN KEY (project_id, environment)
        REFERENCES project_environments (project_id, environment) ON DELETE CASCADE
);

-- Database dumps (issue [3]).
CREATE TABLE backups (
    id            UUID PRIMARY KEY,
    project_id    BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    environment   TEXT NOT NULL,
    path          TEXT NOT NULL,
    size_bytes    BIGINT,
    sha256        TEXT,
    status        TEXT NOT NULL DEFAULT 'running'
                  CONSTRAINT backups_status CHECK (status IN ('running', 'succeeded', 'failed')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at   TIMESTAMPTZ
);

-- API keys codeb_{team}_{role}_{token}, stored as SHA-256 (DESIGN §6).
CREATE TABLE api_keys (
    id            UUID PRIMARY KEY,
    team_id       TEXT NOT NULL REFERENCES teams (id),
    role          TEXT NOT NULL CONSTRAINT api_keys_role CHECK (role IN ('viewer', 'member', 'admin', 'owner')),
    label         TEXT NOT NULL DEFAULT '',
    key_sha256    BYTEA NOT NULL CONSTRAINT api_keys_hash_unique UNIQUE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ,
    last_used_at  TIMESTAMPTZ
);

-- Approvals of critical operations, bound to the hash of the dry-run plan.
CREATE TABLE approvals (
    id              UUID PRIMARY KEY,
    team_id         TEXT NOT NULL REFERENCES teams (id),
    tool            TEXT NOT NULL,
    arguments       JSONB NOT NULL,
    plan_hash       TEXT NOT NULL,
    requested_by    UUID REFERENCES api_keys (id),
    approved_by     UUID REFERENCES api_keys (id),
    status          TEXT NOT NULL DEFAULT 'pending'
                    CONSTRAINT approvals_status CHECK (status IN ('pending', 'approved', 'executed', 'expired', 'refused')),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at      TIMESTAMPTZ NOT NULL,
    decided_at      TIMESTAMPTZ,
    executed_at     TIMESTAMPTZ,
    CONSTRAINT approvals_second_key CHECK (approved_by IS NULL OR approved_by IS DISTINCT FROM requested_by)
);

-- Every tool call, with redacted arguments (DESIGN §6).
CREATE TABLE audit_log (
    id              BIGSERIAL PRIMARY KEY,
    at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    tool            TEXT NOT NULL,
    arguments       JSONB NOT NULL DEFAULT '{}',
    principal       TEXT NOT NULL,
    team_id         TEXT,
    role            TEXT,
    client_name     TEXT,
    client_version  TEXT,
    project         TEXT,
    outcome         TEXT NOT NULL CONSTRAINT audit_log_outcome CHECK (outcome IN ('ok', 'tool_error', 'denied', 'protocol_error')),
    error           TEXT,
    duration_ms     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX audit_log_by_time ON audit_log (at DESC);
