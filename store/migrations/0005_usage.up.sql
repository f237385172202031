-- The usage ledger (one row per session and kind, written once by the
-- session workflow: retries cannot count twice) and full call transcripts.
CREATE TABLE usage_ledger (
    tenant_id   uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    session_id  uuid NOT NULL REFERENCES sessions (id),
    kind        text NOT NULL CHECK (kind IN ('session', 'audio_in_seconds', 'audio_out_seconds', 'input_tokens', 'output_tokens')),
    quantity    double precision NOT NULL CHECK (quantity >= 0),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, kind)
);
CREATE INDEX usage_ledger_tenant_time ON usage_ledger (tenant_id, recorded_at);

CREATE TABLE session_transcripts (
    session_id uuid PRIMARY KEY REFERENCES sessions (id),
    tenant_id  uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    turns      jsonb NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE usage_ledger ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_ledger
    USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());
ALTER TABLE session_transcripts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON session_transcripts
    USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());
GRANT SELECT, INSERT ON usage_ledger TO avb_app;
GRANT SELECT, INSERT, UPDATE ON session_transcripts TO avb_app;
