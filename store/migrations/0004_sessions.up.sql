-- Voice sessions and what happened in them.
CREATE TABLE sessions (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id            uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    project_id           uuid,
    api_key_id           uuid REFERENCES api_keys (id),
    user_id              uuid REFERENCES users (id),
    status               text NOT NULL DEFAULT 'created'
                         CHECK (status IN ('created', 'active', 'completed', 'error', 'terminated')),
    config               jsonb NOT NULL DEFAULT '{}',
    duration_seconds     double precision NOT NULL DEFAULT 0,
    input_tokens         bigint NOT NULL DEFAULT 0,
    output_tokens        bigint NOT NULL DEFAULT 0,
    input_audio_seconds  double precision NOT NULL DEFAULT 0,
    output_audio_seconds double precision NOT NULL DEFAULT 0,
    turns                integer NOT NULL DEFAULT 0,
    error                text NOT NULL DEFAULT '',
    created_at           timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    ended_at             timestamptz
);
CREATE INDEX sessions_tenant_created ON sessions (tenant_id, created_at DESC, id DESC);

CREATE TABLE session_events (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    session_id uuid NOT NULL REFERENCES sessions (id),
    type       text NOT NULL,
    data       jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX session_events_session ON session_events (session_id, created_at, id);

ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sessions
    USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());
ALTER TABLE session_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON session_events
    USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());
GRANT SELECT, INSERT, UPDATE ON sessions TO avb_app;
GRANT SELECT, INSERT ON session_events TO avb_app;
