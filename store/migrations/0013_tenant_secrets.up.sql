-- A tenant's own secrets (its OpenAI key, its webhook signing secret),
-- stored only as Vault Transit ciphertexts of a key derived for the tenant:
-- the database never holds one in plain text, and a row copied to another
-- tenant does not decrypt.
CREATE TABLE tenant_secrets (
    tenant_id   uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    name        text NOT NULL CHECK (name IN ('openai_api_key', 'webhook_signing_secret')),
    ciphertext  text NOT NULL CHECK (ciphertext ~ '^vault:v[0-9]+:'),
    key_version integer NOT NULL CHECK (key_version > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
CREATE INDEX tenant_secrets_key_version ON tenant_secrets (key_version);

ALTER TABLE tenant_secrets ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_secrets
    USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_secrets TO avb_app;

-- The tenants with a secret encrypted under a Transit key version older
-- than below, for the rewrap after a key rotation (each tenant's rows are
-- then rewrapped in its own transaction, under row-level security).
CREATE FUNCTION tenant_secrets_to_rewrap(below integer)
    RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT DISTINCT tenant_id FROM tenant_secrets WHERE key_version < below $$;
REVOKE ALL ON FUNCTION tenant_secrets_to_rewrap(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_secrets_to_rewrap(integer) TO avb_app;
