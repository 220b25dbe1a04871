-- Audit rows name the environment a call acted on and the JSON-RPC request
-- id it came with, so a row can be matched to a client's log and filtered
-- without reading the arguments JSON.
ALTER TABLE audit_log
    ADD COLUMN environment TEXT,
    ADD COLUMN request_id  TEXT;
