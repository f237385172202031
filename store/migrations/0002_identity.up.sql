-- Identity and tenancy: tenant limits and settings, users, API keys, and the
-- row-level security that confines every tenant-owned row to its tenant.
--
-- The application connects as avb_app: not a superuser, no BYPASSRLS, owner
-- of nothing. Every request runs in a transaction that sets app.tenant_id
-- (SET LOCAL); a query that forgets it sees no rows at all.

DO $$
BEGIN
    CREATE ROLE avb_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- the role is cluster-wide; another database created it
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO avb_app', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO avb_app;

-- current_tenant_id is the tenant the transaction acts for, or NULL.
CREATE FUNCTION current_tenant_id() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

ALTER TABLE tenants
    ADD COLUMN billing_id             text    NOT NULL DEFAULT '',
    ADD COLUMN settings               jsonb   NOT NULL DEFAULT '{}',
    ADD COLUMN status_reason          text    NOT NULL DEFAULT '',
    ADD COLUMN max_users              integer NOT NULL DEFAULT 3   CHECK (max_users >= 0),
    ADD COLUMN max_projects           integer NOT NULL DEFAULT 2   CHECK (max_projects >= 0),
    ADD COLUMN max_api_keys           integer NOT NULL DEFAULT 2   CHECK (max_api_keys >= 0),
    ADD COLUMN max_sessions_per_month integer NOT NULL DEFAULT 100 CHECK (max_sessions_per_month >= 0);
-- Tenants are platform-level rows (resolved before a tenant is known); the
-- application reads and writes them only through the tenant repository.
GRANT SELECT, INSERT, UPDATE ON tenants TO avb_app;

CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    subject       text NOT NULL UNIQUE CHECK (length(subject) BETWEEN 1 AND 255),
    email         text NOT NULL DEFAULT '',
    first_name    text NOT NULL DEFAULT '',
    last_name     text NOT NULL DEFAULT '',
    is_active     boolean NOT NULL DEFAULT true,
    roles         text[] NOT NULL DEFAULT '{}',
    preferences   jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_tenant_created ON users (tenant_id, created_at, id);

CREATE TABLE api_keys (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description     text NOT NULL DEFAULT '',
    prefix          text NOT NULL,
    key_hash        bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    scopes          text[] NOT NULL CHECK (scopes <@ ARRAY['realtime', 'billing', 'admin'] AND cardinality(scopes) > 0),
    rate_limit_tier text NOT NULL DEFAULT 'standard' CHECK (rate_limit_tier IN ('standard', 'elevated', 'unlimited')),
    expires_at      timestamptz,
    revoked_at      timestamptz,
    last_used_at    timestamptz,
    last_used_ip    text NOT NULL DEFAULT '',
    usage_count     bigint NOT NULL DEFAULT 0,
    created_by      uuid REFERENCES users (id),
    replaced_by     uuid REFERENCES api_keys (id),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_tenant_created ON api_keys (tenant_id, created_at DESC, id DESC);

-- Row-level security: one policy per tenant-owned table, reads and writes.
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON users
    USING (tenant_id = current_tenant_id())
    WITH CHECK (tenant_id = current_tenant_id());
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys
    USING (tenant_id = current_tenant_id())
    WITH CHECK (tenant_id = current_tenant_id());
GRANT SELECT, INSERT, UPDATE ON users, api_keys TO avb_app;

-- Authenticating an API key happens before its tenant is known, and usage is
-- recorded for many tenants at once. These two functions are the only ways
-- past row-level security, and each does one narrow thing.
CREATE FUNCTION api_key_by_hash(h bytea)
    RETURNS TABLE (id uuid, tenant_id uuid, scopes text[], rate_limit_tier text,
                   expires_at timestamptz, revoked_at timestamptz, created_by uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT id, tenant_id, scopes, rate_limit_tier, expires_at, revoked_at, created_by
          FROM api_keys WHERE key_hash = h $$;

CREATE FUNCTION record_api_key_usage(ids uuid[], counts bigint[], used_at timestamptz[], ips text[])
    RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ UPDATE api_keys k
          SET usage_count  = k.usage_count + u.n,
              last_used_at = GREATEST(k.last_used_at, u.at),
              last_used_ip = CASE WHEN k.last_used_at IS NULL OR u.at >= k.last_used_at THEN u.ip ELSE k.last_used_ip END
          FROM unnest(ids, counts, used_at, ips) AS u(id, n, at, ip)
          WHERE k.id = u.id $$;

REVOKE ALL ON FUNCTION api_key_by_hash(bytea), record_api_key_usage(uuid[], bigint[], timestamptz[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_key_by_hash(bytea), record_api_key_usage(uuid[], bigint[], timestamptz[], text[]) TO avb_app;
GRANT EXECUTE ON FUNCTION current_tenant_id() TO avb_app;
