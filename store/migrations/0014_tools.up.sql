-- Tools during calls: a session counts the tool calls its model made, and a
-- rotated webhook signing secret stays valid (signing alongside the new
-- one) for a grace period, kept as webhook_signing_secret_previous.
ALTER TABLE sessions ADD COLUMN tool_calls integer NOT NULL DEFAULT 0;

ALTER TABLE tenant_secrets DROP CONSTRAINT tenant_secrets_name_check;
ALTER TABLE tenant_secrets ADD CONSTRAINT tenant_secrets_name_check
    CHECK (name IN ('openai_api_key', 'webhook_signing_secret', 'webhook_signing_secret_previous'));
