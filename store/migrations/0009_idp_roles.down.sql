ALTER TABLE users DROP COLUMN idp_roles;
