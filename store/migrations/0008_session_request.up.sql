-- request_id makes CreateSession retry-safe: a retry with the same id
-- returns the session the first request created.
ALTER TABLE sessions ADD COLUMN request_id uuid;
CREATE UNIQUE INDEX sessions_request ON sessions (tenant_id, request_id);
