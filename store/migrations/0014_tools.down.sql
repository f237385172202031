DELETE FROM tenant_secrets WHERE name = 'webhook_signing_secret_previous';
ALTER TABLE tenant_secrets DROP CONSTRAINT tenant_secrets_name_check;
ALTER TABLE tenant_secrets ADD CONSTRAINT tenant_secrets_name_check
    CHECK (name IN ('openai_api_key', 'webhook_signing_secret'));
ALTER TABLE sessions DROP COLUMN tool_calls;
