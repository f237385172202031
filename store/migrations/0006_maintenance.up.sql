-- Scheduled maintenance. Both jobs span every tenant, so each is one narrow
-- SECURITY DEFINER function: the app role can run them but still cannot
-- read across tenants.

-- Hourly usage totals per tenant, recomputed from the ledger (idempotent).
CREATE TABLE usage_hourly (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    hour      timestamptz NOT NULL,
    kind      text NOT NULL,
    quantity  double precision NOT NULL,
    PRIMARY KEY (tenant_id, hour, kind)
);
ALTER TABLE usage_hourly ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_hourly
    USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());
GRANT SELECT ON usage_hourly TO avb_app;

-- Ends sessions left open longer than max_age (their call and workflow are
-- gone: a workflow ends its session at 24 h). Returns how many it ended.
CREATE FUNCTION expire_stale_sessions(max_age interval)
    RETURNS integer
    LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ WITH ended AS (
              UPDATE sessions SET status = 'terminated', error = 'expired: left open past its maximum duration',
                                  ended_at = now()
              WHERE status IN ('created', 'active') AND created_at < now() - max_age
              RETURNING 1)
          SELECT count(*)::integer FROM ended $$;

-- Recomputes the hourly totals of the hours since (whole hours).
CREATE FUNCTION rollup_usage(since timestamptz)
    RETURNS integer
    LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ WITH up AS (
              INSERT INTO usage_hourly (tenant_id, hour, kind, quantity)
              SELECT tenant_id, date_trunc('hour', recorded_at), kind, sum(quantity)
              FROM usage_ledger WHERE recorded_at >= date_trunc('hour', since)
              GROUP BY 1, 2, 3
              ON CONFLICT (tenant_id, hour, kind) DO UPDATE SET quantity = EXCLUDED.quantity
              RETURNING 1)
          SELECT count(*)::integer FROM up $$;

REVOKE ALL ON FUNCTION expire_stale_sessions(interval), rollup_usage(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION expire_stale_sessions(interval), rollup_usage(timestamptz) TO avb_app;

-- Batch speech jobs (files): run as Temporal workflows on voice-processing.
CREATE TABLE voice_jobs (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    kind        text NOT NULL CHECK (kind IN ('transcribe', 'synthesize')),
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
    options     jsonb NOT NULL DEFAULT '{}',
    input       bytea NOT NULL,
    output      bytea,
    error       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX voice_jobs_tenant_created ON voice_jobs (tenant_id, created_at DESC);
ALTER TABLE voice_jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON voice_jobs
    USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());
GRANT SELECT, INSERT, UPDATE ON voice_jobs TO avb_app;
