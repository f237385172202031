DROP TABLE role_assignments;
ALTER TABLE tenants DROP COLUMN authz_token;
