-- Requests refused before MCP handling are audited too (DESIGN §6): a
-- missing, unknown, revoked or expired key (`unauthenticated`) and a key
-- over its rate limit (`rate_limited`).
ALTER TABLE audit_log DROP CONSTRAINT audit_log_outcome;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_outcome
    CHECK (outcome IN ('ok', 'tool_error', 'denied', 'protocol_error', 'unauthenticated', 'rate_limited'));
