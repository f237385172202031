-- The audit trail: every entry is a link of its tenant's hash chain, the
-- log is partitioned by month, and retention drops whole partitions.
--
-- An entry's link is
--   hash = sha256(previous hash || int8(seq) || int8(created_at in µs) || digest)
--   digest = sha256(each content field, length-prefixed, in a fixed order)
-- and the first entry's previous hash is 32 zero bytes. The verifier (Go)
-- recomputes both from the stored columns, so changing, removing or
-- reordering rows breaks the chain where it happened.
--
-- Entries are appended through audit_append only: it takes the tenant's
-- chain row (the lock serializes a tenant's writers until their commit),
-- advances it and inserts the row, in one statement of the caller's
-- transaction. The application has no other way to write the log.

ALTER TABLE audit_logs RENAME TO audit_logs_old;
ALTER INDEX audit_logs_time RENAME TO audit_logs_old_time;
ALTER INDEX audit_logs_pkey RENAME TO audit_logs_old_pkey;

-- No foreign keys: a key check locks the tenant's row (FOR KEY SHARE) on
-- every append, and concurrent appends would share that lock through a
-- multixact. Tenants are never deleted, and audit_append takes the tenant
-- from the transaction.
CREATE TABLE audit_logs (
    id             uuid NOT NULL,
    tenant_id      uuid NOT NULL,
    seq            bigint NOT NULL,
    created_at     timestamptz NOT NULL,
    actor_type     text NOT NULL CHECK (actor_type IN ('user', 'api_key', 'system')),
    actor_id       uuid,
    actor_email    text NOT NULL DEFAULT '',
    action         text NOT NULL,
    resource_type  text NOT NULL DEFAULT '',
    resource_id    text NOT NULL DEFAULT '',
    description    text NOT NULL DEFAULT '',
    ip_address     text NOT NULL DEFAULT '',
    user_agent     text NOT NULL DEFAULT '',
    request_id     text NOT NULL DEFAULT '',
    old_values     jsonb NOT NULL DEFAULT '{}',
    new_values     jsonb NOT NULL DEFAULT '{}',
    hash           bytea NOT NULL,
    PRIMARY KEY (tenant_id, seq, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX audit_logs_time ON audit_logs (tenant_id, created_at DESC, id DESC);
-- "Everything that happened to this resource / this actor did", newest first.
CREATE INDEX audit_logs_resource ON audit_logs (tenant_id, resource_id, created_at DESC, id DESC);
CREATE INDEX audit_logs_actor ON audit_logs (tenant_id, actor_id, created_at DESC, id DESC);
CREATE TABLE audit_logs_default PARTITION OF audit_logs DEFAULT;

CREATE TRIGGER audit_logs_immutable BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_immutable();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_immutable();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs_default
    FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_immutable();

-- One row per tenant: the head of its chain, and where retention cut it
-- (cut_seq is the last entry removed, cut_hash its hash).
CREATE TABLE audit_chains (
    tenant_id  uuid PRIMARY KEY,
    seq        bigint NOT NULL,
    at         timestamptz NOT NULL,
    hash       bytea NOT NULL,
    cut_seq    bigint NOT NULL DEFAULT 0,
    cut_hash   bytea NOT NULL DEFAULT decode(repeat('00', 32), 'hex'),
    cut_at     timestamptz
);

ALTER TABLE audit_logs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_logs USING (tenant_id = current_tenant_id());
ALTER TABLE audit_chains ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_chains USING (tenant_id = current_tenant_id());
-- The application reads; only audit_append writes.
GRANT SELECT ON audit_logs, audit_chains TO avb_app;

CREATE FUNCTION audit_lp(t text) RETURNS bytea
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT int4send(octet_length(convert_to(t, 'UTF8'))) || convert_to(t, 'UTF8') $$;

CREATE FUNCTION audit_digest(id uuid, tenant_id uuid, actor_type text, actor_id uuid, actor_email text,
                             action text, resource_type text, resource_id text, description text,
                             ip_address text, user_agent text, request_id text, old_values jsonb, new_values jsonb)
    RETURNS bytea LANGUAGE sql IMMUTABLE
    AS $$ SELECT sha256(audit_lp(id::text) || audit_lp(tenant_id::text) || audit_lp(actor_type)
                        || audit_lp(coalesce(actor_id::text, '')) || audit_lp(actor_email) || audit_lp(action)
                        || audit_lp(resource_type) || audit_lp(resource_id) || audit_lp(description)
                        || audit_lp(ip_address) || audit_lp(user_agent) || audit_lp(request_id)
                        || audit_lp(old_values::text) || audit_lp(new_values::text)) $$;

CREATE FUNCTION audit_link(prev bytea, seq bigint, at timestamptz, digest bytea) RETURNS bytea
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT sha256(prev || int8send(seq) || int8send((extract(epoch FROM at) * 1000000)::bigint) || digest) $$;

-- audit_chain_insert appends one entry to tenant's chain. Its time is the
-- later of at and the chain head's, so a tenant's entries are in time
-- order as well as in sequence (a retention cut is a prefix of the chain).
CREATE FUNCTION audit_chain_insert(p_tenant uuid, p_at timestamptz, p_actor_type text, p_actor_id uuid,
                                   p_actor_email text, p_action text, p_resource_type text, p_resource_id text,
                                   p_description text, p_ip text, p_user_agent text, p_request_id text,
                                   p_old jsonb, p_new jsonb)
    RETURNS TABLE (id uuid, seq bigint, created_at timestamptz)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    v_id     uuid := gen_random_uuid();
    v_digest bytea;
    v_seq    bigint;
    v_at     timestamptz;
    v_hash   bytea;
BEGIN
    IF p_tenant IS NULL THEN
        RAISE EXCEPTION 'an audit entry needs a tenant' USING ERRCODE = 'not_null_violation';
    END IF;
    v_digest := audit_digest(v_id, p_tenant, p_actor_type, p_actor_id, p_actor_email, p_action, p_resource_type,
                             p_resource_id, p_description, p_ip, p_user_agent, p_request_id, p_old, p_new);
    INSERT INTO audit_chains AS c (tenant_id, seq, at, hash)
        VALUES (p_tenant, 1, p_at, audit_link(decode(repeat('00', 32), 'hex'), 1, p_at, v_digest))
        ON CONFLICT (tenant_id) DO UPDATE
        SET seq = c.seq + 1, at = greatest(p_at, c.at),
            hash = audit_link(c.hash, c.seq + 1, greatest(p_at, c.at), v_digest)
        RETURNING c.seq, c.at, c.hash INTO v_seq, v_at, v_hash;
    INSERT INTO audit_logs (id, tenant_id, seq, created_at, actor_type, actor_id, actor_email, action,
                            resource_type, resource_id, description, ip_address, user_agent, request_id,
                            old_values, new_values, hash)
        VALUES (v_id, p_tenant, v_seq, v_at, p_actor_type, p_actor_id, p_actor_email, p_action,
                p_resource_type, p_resource_id, p_description, p_ip, p_user_agent, p_request_id,
                p_old, p_new, v_hash);
    RETURN QUERY SELECT v_id, v_seq, v_at;
END $$;
REVOKE ALL ON FUNCTION audit_chain_insert(uuid, timestamptz, text, uuid, text, text, text, text, text, text, text, text, jsonb, jsonb) FROM PUBLIC;

-- audit_append is how the application records: for the tenant its
-- transaction acts for, at this statement's time.
CREATE FUNCTION audit_append(p_actor_type text, p_actor_id uuid, p_actor_email text, p_action text,
                             p_resource_type text, p_resource_id text, p_description text, p_ip text,
                             p_user_agent text, p_request_id text, p_old jsonb, p_new jsonb)
    RETURNS TABLE (id uuid, seq bigint, created_at timestamptz)
    -- plpgsql, not sql: its plan is cached for the session (a SECURITY
    -- DEFINER sql function is planned again on every call).
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
BEGIN
    RETURN QUERY SELECT * FROM audit_chain_insert(current_tenant_id(), statement_timestamp(), p_actor_type, p_actor_id,
                                                  p_actor_email, p_action, p_resource_type, p_resource_id, p_description,
                                                  p_ip, p_user_agent, p_request_id, p_old, p_new);
END $$;
REVOKE ALL ON FUNCTION audit_append(text, uuid, text, text, text, text, text, text, text, text, jsonb, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_append(text, uuid, text, text, text, text, text, text, text, text, jsonb, jsonb) TO avb_app;

-- audit_ensure_partitions creates the monthly partitions (UTC months) from
-- the month of since to months_ahead months after this one, and returns
-- how many it created. A month the default partition already holds rows
-- of is left there (with a warning): it would not attach.
CREATE FUNCTION audit_ensure_partitions(since timestamptz, months_ahead integer)
    RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    m    timestamp := date_trunc('month', since AT TIME ZONE 'UTC');
    last timestamp := date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => months_ahead);
    name text;
    n    integer := 0;
BEGIN
    WHILE m <= last LOOP
        name := 'audit_logs_p' || to_char(m, 'YYYYMM');
        IF to_regclass(name) IS NULL THEN
            IF EXISTS (SELECT 1 FROM audit_logs_default
                       WHERE created_at >= (m AT TIME ZONE 'UTC') AND created_at < ((m + interval '1 month') AT TIME ZONE 'UTC')) THEN
                RAISE WARNING 'audit log month % stays in the default partition', to_char(m, 'YYYY-MM');
            ELSE
                EXECUTE format('CREATE TABLE %I PARTITION OF audit_logs FOR VALUES FROM (%L) TO (%L)', name,
                               m AT TIME ZONE 'UTC', (m + interval '1 month') AT TIME ZONE 'UTC');
                EXECUTE format('CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_immutable()', name);
                n := n + 1;
            END IF;
        END IF;
        m := m + interval '1 month';
    END LOOP;
    RETURN n;
END $$;

-- audit_retain drops the monthly partitions every tenant's retention has
-- passed, oldest first. A tenant keeps its entries default_days, or the
-- longer retention its settings ask for (security.auditRetentionDays), at
-- most max_days. Before a partition goes, each tenant's
-- chain records the last entry it held, so the chain still verifies.
-- Returns how many partitions it dropped.
CREATE FUNCTION audit_retain(default_days integer, max_days integer)
    RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    keep  integer;
    part  record;
    upper timestamptz;
    n     integer := 0;
BEGIN
    SELECT greatest(least(default_days, max_days),
                    coalesce(max(least(coalesce((settings->'security'->>'auditRetentionDays')::integer, 0), max_days)), 0))
        INTO keep FROM tenants WHERE status <> 'deleted';
    FOR part IN SELECT c.relname::text AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'audit_logs'::regclass AND c.relname ~ '^audit_logs_p[0-9]{6}$'
                ORDER BY c.relname LOOP
        upper := (to_date(substr(part.name, 13), 'YYYYMM')::timestamp + interval '1 month') AT TIME ZONE 'UTC';
        EXIT WHEN upper > now() - make_interval(days => keep);
        EXECUTE format('UPDATE audit_chains c SET cut_seq = x.seq, cut_hash = x.hash, cut_at = now()
                        FROM (SELECT DISTINCT ON (tenant_id) tenant_id, seq, hash FROM %I ORDER BY tenant_id, seq DESC) x
                        WHERE c.tenant_id = x.tenant_id AND x.seq > c.cut_seq', part.name);
        EXECUTE format('DROP TABLE %I', part.name);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
REVOKE ALL ON FUNCTION audit_ensure_partitions(timestamptz, integer), audit_retain(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_ensure_partitions(timestamptz, integer), audit_retain(integer, integer) TO avb_app;

-- The hourly cleanup's ended sessions are audited (actor system), each in
-- the transaction that ends it.
CREATE OR REPLACE FUNCTION expire_stale_sessions(max_age interval)
    RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN UPDATE sessions s SET status = 'terminated', error = 'expired: left open past its maximum duration',
                                   ended_at = now()
             FROM (SELECT id, status FROM sessions
                   WHERE status IN ('created', 'active') AND created_at < now() - max_age FOR UPDATE) o
             WHERE s.id = o.id
             RETURNING s.id, s.tenant_id, o.status AS was LOOP
        PERFORM audit_chain_insert(r.tenant_id, statement_timestamp(), 'system', NULL, '', 'update', 'session', r.id::text,
                                   'session ended by the cleanup: left open past its maximum duration', '', '', '',
                                   jsonb_build_object('status', r.was), '{"status": "terminated"}');
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

-- Token sessions: a user's first request with a new session of the
-- identity provider (its sid, or the token when it has none) inserts a
-- row, and records login with it. auth_logouts holds the sessions the
-- identity provider ended (back-channel logout), whether or not avb saw
-- them yet: their tokens are refused from then on.
CREATE TABLE auth_sessions (
    tenant_id      uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    session_key    text NOT NULL,
    user_id        uuid NOT NULL REFERENCES users (id),
    subject        text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    logged_out_at  timestamptz,
    PRIMARY KEY (tenant_id, session_key)
);
CREATE INDEX auth_sessions_key ON auth_sessions (session_key);
CREATE INDEX auth_sessions_subject ON auth_sessions (subject) WHERE logged_out_at IS NULL;
ALTER TABLE auth_sessions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON auth_sessions
    USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());
GRANT SELECT, INSERT ON auth_sessions TO avb_app;

CREATE TABLE auth_logouts (
    session_key    text PRIMARY KEY,
    logged_out_at  timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON auth_logouts TO avb_app;

-- auth_logout ends a session of the identity provider (by sid; by subject
-- alone: every session avb knows of that user), records logout in each
-- tenant it was used in, and returns the session keys it ended.
CREATE FUNCTION auth_logout(p_sid text, p_subject text)
    RETURNS SETOF text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    r record;
BEGIN
    IF p_sid <> '' THEN
        INSERT INTO auth_logouts (session_key) VALUES (p_sid) ON CONFLICT DO NOTHING;
        RETURN NEXT p_sid;
    END IF;
    FOR r IN UPDATE auth_sessions s SET logged_out_at = now() FROM users u
             WHERE s.logged_out_at IS NULL AND u.id = s.user_id
               AND CASE WHEN p_sid <> '' THEN s.session_key = p_sid ELSE s.subject = p_subject END
             RETURNING s.tenant_id, s.session_key, s.user_id, u.email LOOP
        INSERT INTO auth_logouts (session_key) VALUES (r.session_key) ON CONFLICT DO NOTHING;
        PERFORM audit_chain_insert(r.tenant_id, statement_timestamp(), 'user', r.user_id, r.email, 'logout', 'user',
                                   r.user_id::text, 'signed out at the identity provider (back-channel logout)', '', '', '', '{}',
                                   CASE WHEN r.session_key LIKE 'tok:%' THEN '{}'::jsonb
                                        ELSE jsonb_build_object('session', r.session_key) END);
        IF p_sid = '' THEN
            RETURN NEXT r.session_key;
        END IF;
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION auth_logout(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth_logout(text, text) TO avb_app;

-- The entries written before the chain existed join it in their order.
SELECT audit_ensure_partitions(coalesce((SELECT min(created_at) FROM audit_logs_old), now()), 3);
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT * FROM audit_logs_old ORDER BY tenant_id, created_at, id LOOP
        PERFORM audit_chain_insert(r.tenant_id, r.created_at, r.actor_type, r.actor_id, '', r.action, r.resource_type,
                                   r.resource_id, '', r.ip_address, '', r.request_id, '{}', r.changes);
    END LOOP;
END $$;
DROP TABLE audit_logs_old;
