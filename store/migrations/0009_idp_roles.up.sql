-- idp_roles is the set of tenant roles the identity provider's token last
-- granted that avb has applied (role_assignments and SpiceDB). A request
-- whose token carries another set reconciles the two: it grants what is new
-- and revokes what the provider took away. A reconciliation that fails
-- leaves idp_roles as it was, so the next request tries again.
ALTER TABLE users ADD COLUMN idp_roles text[] NOT NULL DEFAULT '{}';

-- Existing users had their token's roles seeded once, as assignments
-- nobody granted.
UPDATE users u SET idp_roles = COALESCE(
    (SELECT array_agg(r.role ORDER BY r.role) FROM role_assignments r
      WHERE r.tenant_id = u.tenant_id AND r.user_id = u.id AND r.granted_by IS NULL), '{}');
