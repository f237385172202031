-- The outbox of session workflows. A session is written with
-- workflow_started_at NULL in its own transaction; avb starts its Temporal
-- workflow in the background and sets it once Temporal confirmed. Sessions
-- still open with it NULL (Temporal was down, or the server died first) are
-- handed to the workflow starter again until it is set.
ALTER TABLE sessions ADD COLUMN workflow_started_at timestamptz;
UPDATE sessions SET workflow_started_at = created_at;
CREATE INDEX sessions_awaiting_workflow ON sessions (created_at)
    WHERE workflow_started_at IS NULL AND status IN ('created', 'active');

-- Sessions of every tenant awaiting their workflow, created before
-- older_than ago (younger ones are still being started by their server).
CREATE FUNCTION sessions_awaiting_workflow(older_than interval, max_rows integer)
    RETURNS TABLE (id uuid, tenant_id uuid, status text, config jsonb, created_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT s.id, s.tenant_id, s.status, s.config, s.created_at FROM sessions s
          WHERE s.workflow_started_at IS NULL AND s.status IN ('created', 'active')
            AND s.created_at < now() - older_than
          ORDER BY s.created_at LIMIT max_rows $$;
REVOKE ALL ON FUNCTION sessions_awaiting_workflow(interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sessions_awaiting_workflow(interval, integer) TO avb_app;
