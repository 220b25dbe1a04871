-- Names have owners (DESIGN §6, issue 11).
--
-- A zone codeb created in PowerDNS (a managed zone, on a domain_setup)
-- belongs to the team it was created for: other teams' domain_setup is
-- refused for every name in it. Zones codeb did not create have no row;
-- their names are protected one by one (domain rows, and records codeb did
-- not make).
CREATE TABLE zones (
    -- Lowercase, no trailing dot.
    zone        TEXT PRIMARY KEY,
    team_id     TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- When an owner replaced address records codeb did not make
-- (domain_setup with `takeover: true`): who, when and what was there
-- before, e.g. {"by": "alice", "at": "...", "replaced": ["A 192.0.2.77"]}.
ALTER TABLE domains ADD COLUMN takeover JSONB;
