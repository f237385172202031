-- Phone calls: a tenant's phone numbers (E.164; a number rings one tenant,
-- so it is unique across tenants) and the SIP trunks that may call them
-- (digest credentials kept as HA1, or source address allowlists). Both
-- have the named resources' shape.
CREATE TABLE phone_numbers (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    project_id  uuid REFERENCES projects (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^\+[1-9][0-9]{2,14}$'),
    spec        jsonb NOT NULL DEFAULT '{}',
    request_id  uuid,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX phone_numbers_number ON phone_numbers (name);
CREATE UNIQUE INDEX phone_numbers_name ON phone_numbers (tenant_id, lower(name));
CREATE UNIQUE INDEX phone_numbers_request ON phone_numbers (tenant_id, request_id);
CREATE INDEX phone_numbers_created ON phone_numbers (tenant_id, created_at, id);

CREATE TABLE sip_trunks (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    name        text NOT NULL CHECK (name <> ''),
    spec        jsonb NOT NULL DEFAULT '{}',
    request_id  uuid,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX sip_trunks_name ON sip_trunks (tenant_id, lower(name));
CREATE UNIQUE INDEX sip_trunks_request ON sip_trunks (tenant_id, request_id);
CREATE INDEX sip_trunks_created ON sip_trunks (tenant_id, created_at, id);

ALTER TABLE phone_numbers ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON phone_numbers
    USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());
ALTER TABLE sip_trunks ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sip_trunks
    USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON phone_numbers, sip_trunks TO avb_app;

-- An incoming call names a number before its tenant is known: this is the
-- one narrow way from a number to its tenant (the tenant's trunks are then
-- read under row-level security).
CREATE FUNCTION phone_number_route(number text)
    RETURNS TABLE (id uuid, tenant_id uuid, project_id uuid, spec jsonb)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT id, tenant_id, project_id, spec FROM phone_numbers WHERE name = number $$;
REVOKE ALL ON FUNCTION phone_number_route(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phone_number_route(text) TO avb_app;

-- Phone minutes are a usage metric of their own (seconds, per session).
ALTER TABLE usage_ledger DROP CONSTRAINT usage_ledger_kind_check;
ALTER TABLE usage_ledger ADD CONSTRAINT usage_ledger_kind_check
    CHECK (kind IN ('session', 'audio_in_seconds', 'audio_out_seconds', 'input_tokens', 'output_tokens', 'api_calls', 'phone_seconds'));
