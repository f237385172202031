-- The API's named resources (projects, personas, voice configs, themes),
-- project members, notifications, the audit log and invoices.
--
-- Named resources share one shape: typed columns for what queries use
-- (name, project, default flag) and the rest of the resource as JSON
-- (the protobuf message's JSON form). request_id makes creates retry-safe.
CREATE TABLE projects (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    name        text NOT NULL CHECK (name <> ''),
    spec        jsonb NOT NULL DEFAULT '{}',
    request_id  uuid,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX projects_name ON projects (tenant_id, lower(name));
CREATE UNIQUE INDEX projects_request ON projects (tenant_id, request_id);
CREATE INDEX projects_created ON projects (tenant_id, created_at, id);

CREATE TABLE personas (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    project_id  uuid REFERENCES projects (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name <> ''),
    spec        jsonb NOT NULL DEFAULT '{}',
    request_id  uuid,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX personas_name ON personas (tenant_id, lower(name));
CREATE UNIQUE INDEX personas_request ON personas (tenant_id, request_id);
CREATE INDEX personas_created ON personas (tenant_id, created_at, id);

CREATE TABLE voice_configs (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    project_id  uuid REFERENCES projects (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name <> ''),
    spec        jsonb NOT NULL DEFAULT '{}',
    request_id  uuid,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX voice_configs_name ON voice_configs (tenant_id, lower(name));
CREATE UNIQUE INDEX voice_configs_request ON voice_configs (tenant_id, request_id);
CREATE INDEX voice_configs_created ON voice_configs (tenant_id, created_at, id);

CREATE TABLE themes (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    name        text NOT NULL CHECK (name <> ''),
    is_default  boolean NOT NULL DEFAULT false,
    spec        jsonb NOT NULL DEFAULT '{}',
    request_id  uuid,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX themes_name ON themes (tenant_id, lower(name));
CREATE UNIQUE INDEX themes_request ON themes (tenant_id, request_id);
CREATE UNIQUE INDEX themes_default ON themes (tenant_id) WHERE is_default;
CREATE INDEX themes_created ON themes (tenant_id, created_at, id);

-- Project roles (mirrored into SpiceDB, which enforces them).
CREATE TABLE project_members (
    tenant_id   uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES users (id),
    role        text NOT NULL CHECK (role IN ('admin', 'developer', 'operator', 'viewer')),
    granted_by  uuid REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, user_id, role)
);

-- Notifications: to one user, or to the whole tenant (user_id NULL); read
-- state is per user.
CREATE TABLE notifications (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    user_id     uuid REFERENCES users (id),
    type        text NOT NULL,
    severity    text NOT NULL DEFAULT 'info' CHECK (severity IN ('info', 'warning', 'error')),
    title       text NOT NULL,
    body        text NOT NULL DEFAULT '',
    data        jsonb NOT NULL DEFAULT '{}',
    -- dedupe_key makes a retried notify (a retried activity) write once.
    dedupe_key  text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX notifications_dedupe ON notifications (tenant_id, dedupe_key);
CREATE INDEX notifications_inbox ON notifications (tenant_id, created_at DESC, id DESC);

CREATE TABLE notification_reads (
    tenant_id        uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    notification_id  uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    user_id          uuid NOT NULL REFERENCES users (id),
    read_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (notification_id, user_id)
);

-- The audit log is append-only: the application may insert and read, and a
-- trigger refuses every update and delete, whoever runs it.
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

CREATE FUNCTION audit_logs_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit log entries cannot be changed or deleted' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_logs_immutable BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_immutable();

-- Invoices, as the billing provider issues them.
CREATE TABLE invoices (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    provider_id    text NOT NULL,
    number         text NOT NULL DEFAULT '',
    status         text NOT NULL CHECK (status IN ('draft', 'finalized', 'paid', 'voided')),
    issued_at      timestamptz NOT NULL,
    currency       text NOT NULL,
    total_minor    bigint NOT NULL,
    file_url       text NOT NULL DEFAULT '',
    UNIQUE (tenant_id, provider_id)
);
CREATE INDEX invoices_issued ON invoices (tenant_id, issued_at DESC, id DESC);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['projects', 'personas', 'voice_configs', 'themes', 'project_members',
                             'notifications', 'notification_reads', 'audit_logs', 'invoices'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id())', t);
    END LOOP;
END $$;
GRANT SELECT, INSERT, UPDATE, DELETE ON projects, personas, voice_configs, themes, project_members TO avb_app;
GRANT SELECT, INSERT ON notifications, audit_logs TO avb_app;
GRANT SELECT, INSERT, DELETE ON notification_reads TO avb_app;
GRANT SELECT, INSERT, UPDATE ON invoices TO avb_app;
