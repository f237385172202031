DROP FUNCTION record_api_key_usage(uuid[], bigint[], timestamptz[], text[]);
DROP FUNCTION api_key_by_hash(bytea);
DROP TABLE api_keys;
DROP TABLE users;
REVOKE ALL ON tenants FROM avb_app;
ALTER TABLE tenants
    DROP COLUMN billing_id,
    DROP COLUMN settings,
    DROP COLUMN status_reason,
    DROP COLUMN max_users,
    DROP COLUMN max_projects,
    DROP COLUMN max_api_keys,
    DROP COLUMN max_sessions_per_month;
DROP FUNCTION current_tenant_id();
REVOKE ALL ON SCHEMA public FROM avb_app;
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM avb_app', current_database());
END
$$;
-- The avb_app role is cluster-wide and may serve other databases: it stays.
