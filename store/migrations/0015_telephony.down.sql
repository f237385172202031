DELETE FROM usage_ledger WHERE kind = 'phone_seconds';
ALTER TABLE usage_ledger DROP CONSTRAINT usage_ledger_kind_check;
ALTER TABLE usage_ledger ADD CONSTRAINT usage_ledger_kind_check
    CHECK (kind IN ('session', 'audio_in_seconds', 'audio_out_seconds', 'input_tokens', 'output_tokens', 'api_calls'));
DROP FUNCTION IF EXISTS phone_number_route(text);
DROP TABLE IF EXISTS sip_trunks;
DROP TABLE IF EXISTS phone_numbers;
