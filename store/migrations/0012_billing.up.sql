-- Billing through the provider (Lago). Every ledger row gets an id, which is
-- the provider's transaction id, so a resend can never bill twice, and the
-- time the provider accepted it. Rows may come from API keys (the api_calls
-- counted per flush) as well as from sessions.
ALTER TABLE usage_ledger DROP CONSTRAINT usage_ledger_pkey;
ALTER TABLE usage_ledger ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE usage_ledger ADD PRIMARY KEY (id);
ALTER TABLE usage_ledger ALTER COLUMN session_id DROP NOT NULL;
ALTER TABLE usage_ledger ADD CONSTRAINT usage_ledger_session_kind UNIQUE (session_id, kind);
ALTER TABLE usage_ledger ADD COLUMN api_key_id uuid;
ALTER TABLE usage_ledger ADD COLUMN synced_at timestamptz;
ALTER TABLE usage_ledger DROP CONSTRAINT usage_ledger_kind_check;
ALTER TABLE usage_ledger ADD CONSTRAINT usage_ledger_kind_check
    CHECK (kind IN ('session', 'audio_in_seconds', 'audio_out_seconds', 'input_tokens', 'output_tokens', 'api_calls'));
ALTER TABLE usage_ledger ADD CONSTRAINT usage_ledger_source
    CHECK (CASE WHEN kind = 'api_calls' THEN session_id IS NULL AND api_key_id IS NOT NULL ELSE session_id IS NOT NULL END);
-- What the sync has still to send, oldest first per tenant.
CREATE INDEX usage_ledger_unsynced ON usage_ledger (tenant_id, recorded_at, id) WHERE synced_at IS NULL;
GRANT UPDATE (synced_at) ON usage_ledger TO avb_app;

-- Flushing API key usage also writes the calls to the ledger, per key, in
-- the same statement: counted once, billed once.
CREATE OR REPLACE FUNCTION record_api_key_usage(ids uuid[], counts bigint[], used_at timestamptz[], ips text[])
    RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ WITH u AS (SELECT * FROM unnest(ids, counts, used_at, ips) AS u(id, n, at, ip)),
          k AS (UPDATE api_keys k
                SET usage_count  = k.usage_count + u.n,
                    last_used_at = GREATEST(k.last_used_at, u.at),
                    last_used_ip = CASE WHEN k.last_used_at IS NULL OR u.at >= k.last_used_at THEN u.ip ELSE k.last_used_ip END
                FROM u WHERE k.id = u.id
                RETURNING k.id, k.tenant_id, u.n)
          INSERT INTO usage_ledger (tenant_id, api_key_id, kind, quantity)
          SELECT tenant_id, id, 'api_calls', n FROM k WHERE n > 0 $$;

-- The tenants with ledger rows the provider has not accepted yet (the sync
-- runs as the platform, then works inside each tenant).
CREATE FUNCTION billing_pending_tenants()
    RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT DISTINCT tenant_id FROM usage_ledger WHERE synced_at IS NULL $$;
REVOKE ALL ON FUNCTION billing_pending_tenants() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION billing_pending_tenants() TO avb_app;

-- A tenant's account at the provider: the plan its subscription is on and
-- how its usage sync is doing.
CREATE TABLE billing_accounts (
    tenant_id            uuid PRIMARY KEY DEFAULT current_tenant_id() REFERENCES tenants (id),
    plan_code            text NOT NULL DEFAULT '',
    subscription_status  text NOT NULL DEFAULT 'pending' CHECK (subscription_status IN ('pending', 'active', 'terminated')),
    provisioned_at       timestamptz,
    sync_failures        integer NOT NULL DEFAULT 0,
    last_sync_error      text NOT NULL DEFAULT '',
    last_synced_at       timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- A usage alert fires once per tenant, period, metric and threshold: the
-- insert that wins is the one that notifies, whichever instance makes it.
CREATE TABLE billing_alerts (
    tenant_id     uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    period_start  date NOT NULL,
    metric        text NOT NULL,
    threshold     integer NOT NULL,
    used          double precision NOT NULL,
    quota         double precision NOT NULL,
    fired_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, period_start, metric, threshold)
);

-- Webhooks from the provider already handled, by their unique key.
CREATE TABLE billing_webhooks (
    unique_key   text PRIMARY KEY,
    tenant_id    uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    type         text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['billing_accounts', 'billing_alerts', 'billing_webhooks'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id())', t);
    END LOOP;
END $$;
GRANT SELECT, INSERT, UPDATE ON billing_accounts TO avb_app;
GRANT SELECT, INSERT ON billing_alerts, billing_webhooks TO avb_app;

-- The tenants whose account at the provider does not stand where the tenant
-- does (plans maps each tier to its plan code): never provisioned, on
-- another plan, or deleted with a subscription still active.
CREATE FUNCTION billing_out_of_date(plans jsonb)
    RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT t.id FROM tenants t LEFT JOIN billing_accounts a ON a.tenant_id = t.id
          WHERE CASE WHEN t.status = 'deleted' THEN coalesce(a.subscription_status = 'active', false)
                     ELSE a.tenant_id IS NULL OR a.subscription_status <> 'active'
                          OR a.plan_code <> coalesce(plans ->> t.tier, '') END $$;
REVOKE ALL ON FUNCTION billing_out_of_date(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION billing_out_of_date(jsonb) TO avb_app;

-- A tenant's month so far, for its quotas: sessions created and audio
-- seconds recorded, kept by triggers in the transactions that write them,
-- so a quota check is one key lookup however big the month.
CREATE TABLE usage_month (
    tenant_id      uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    period         date NOT NULL,
    sessions       bigint NOT NULL DEFAULT 0,
    audio_seconds  double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, period)
);
ALTER TABLE usage_month ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_month
    USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());
GRANT SELECT ON usage_month TO avb_app;

CREATE FUNCTION usage_month_count() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
BEGIN
    IF TG_TABLE_NAME = 'sessions' THEN
        INSERT INTO usage_month (tenant_id, period, sessions)
        VALUES (NEW.tenant_id, date_trunc('month', NEW.created_at AT TIME ZONE 'UTC')::date, 1)
        ON CONFLICT (tenant_id, period) DO UPDATE SET sessions = usage_month.sessions + 1;
    ELSE
        INSERT INTO usage_month (tenant_id, period, audio_seconds)
        VALUES (NEW.tenant_id, date_trunc('month', NEW.recorded_at AT TIME ZONE 'UTC')::date, NEW.quantity)
        ON CONFLICT (tenant_id, period) DO UPDATE SET audio_seconds = usage_month.audio_seconds + EXCLUDED.audio_seconds;
    END IF;
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION usage_month_count() FROM PUBLIC;
CREATE TRIGGER usage_month_sessions AFTER INSERT ON sessions
    FOR EACH ROW EXECUTE FUNCTION usage_month_count();
CREATE TRIGGER usage_month_audio AFTER INSERT ON usage_ledger
    FOR EACH ROW WHEN (NEW.kind IN ('audio_in_seconds', 'audio_out_seconds') AND NEW.quantity > 0)
    EXECUTE FUNCTION usage_month_count();

INSERT INTO usage_month (tenant_id, period, sessions)
    SELECT tenant_id, date_trunc('month', created_at AT TIME ZONE 'UTC')::date, count(*) FROM sessions GROUP BY 1, 2;
INSERT INTO usage_month (tenant_id, period, audio_seconds)
    SELECT tenant_id, date_trunc('month', recorded_at AT TIME ZONE 'UTC')::date, sum(quantity) FROM usage_ledger
    WHERE kind IN ('audio_in_seconds', 'audio_out_seconds') GROUP BY 1, 2
    ON CONFLICT (tenant_id, period) DO UPDATE SET audio_seconds = EXCLUDED.audio_seconds;
