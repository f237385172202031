DROP FUNCTION IF EXISTS tenant_secrets_to_rewrap(integer);
DROP TABLE IF EXISTS tenant_secrets;
