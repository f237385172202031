DROP FUNCTION auth_logout(text, text);
DROP TABLE auth_logouts;
DROP TABLE auth_sessions;
CREATE OR REPLACE FUNCTION expire_stale_sessions(max_age interval)
    RETURNS integer
    LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ WITH ended AS (
              UPDATE sessions SET status = 'terminated', error = 'expired: left open past its maximum duration',
                                  ended_at = now()
              WHERE status IN ('created', 'active') AND created_at < now() - max_age
              RETURNING 1)
          SELECT count(*)::integer FROM ended $$;
DROP FUNCTION audit_retain(integer, integer);
DROP FUNCTION audit_ensure_partitions(timestamptz, integer);
DROP FUNCTION audit_append(text, uuid, text, text, text, text, text, text, text, text, jsonb, jsonb);
DROP FUNCTION audit_chain_insert(uuid, timestamptz, text, uuid, text, text, text, text, text, text, text, text, jsonb, jsonb);
DROP FUNCTION audit_link(bytea, bigint, timestamptz, bytea);
DROP FUNCTION audit_digest(uuid, uuid, text, uuid, text, text, text, text, text, text, text, text, jsonb, jsonb);
DROP FUNCTION audit_lp(text);
DROP TABLE audit_chains;
DROP TABLE audit_logs;
CREATE TABLE audit_logs (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor_type     text NOT NULL CHECK (actor_type IN ('user', 'api_key', 'system')),
    actor_id       uuid,
    action         text NOT NULL,
    resource_type  text NOT NULL DEFAULT '',
    resource_id    text NOT NULL DEFAULT '',
    ip_address     text NOT NULL DEFAULT '',
    request_id     text NOT NULL DEFAULT '',
    changes        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_logs_time ON audit_logs (tenant_id, created_at DESC, id DESC);
CREATE TRIGGER audit_logs_immutable BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_immutable();
ALTER TABLE audit_logs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_logs USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());
GRANT SELECT, INSERT ON audit_logs TO avb_app;
