DROP TRIGGER usage_month_audio ON usage_ledger;
DROP TRIGGER usage_month_sessions ON sessions;
DROP FUNCTION usage_month_count();
DROP TABLE usage_month;
DROP TABLE billing_webhooks;
DROP TABLE billing_alerts;
DROP TABLE billing_accounts;
DROP FUNCTION billing_pending_tenants();
DROP FUNCTION billing_out_of_date(jsonb);
CREATE OR REPLACE FUNCTION record_api_key_usage(ids uuid[], counts bigint[], used_at timestamptz[], ips text[])
    RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ UPDATE api_keys k
          SET usage_count  = k.usage_count + u.n,
              last_used_at = GREATEST(k.last_used_at, u.at),
              last_used_ip = CASE WHEN k.last_used_at IS NULL OR u.at >= k.last_used_at THEN u.ip ELSE k.last_used_ip END
          FROM unnest(ids, counts, used_at, ips) AS u(id, n, at, ip)
          WHERE k.id = u.id $$;
REVOKE UPDATE (synced_at) ON usage_ledger FROM avb_app;
DELETE FROM usage_ledger WHERE kind = 'api_calls';
DROP INDEX usage_ledger_unsynced;
ALTER TABLE usage_ledger DROP CONSTRAINT usage_ledger_source;
ALTER TABLE usage_ledger DROP CONSTRAINT usage_ledger_kind_check;
ALTER TABLE usage_ledger ADD CONSTRAINT usage_ledger_kind_check
    CHECK (kind IN ('session', 'audio_in_seconds', 'audio_out_seconds', 'input_tokens', 'output_tokens'));
ALTER TABLE usage_ledger DROP COLUMN synced_at;
ALTER TABLE usage_ledger DROP COLUMN api_key_id;
ALTER TABLE usage_ledger DROP CONSTRAINT usage_ledger_session_kind;
ALTER TABLE usage_ledger ALTER COLUMN session_id SET NOT NULL;
ALTER TABLE usage_ledger DROP CONSTRAINT usage_ledger_pkey;
ALTER TABLE usage_ledger DROP COLUMN id;
ALTER TABLE usage_ledger ADD PRIMARY KEY (session_id, kind);
