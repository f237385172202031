-- Authorization: role assignments (mirrored into SpiceDB, which enforces
-- them) and, per tenant, the ZedToken of its newest authorization write, so
-- checks are at least as fresh as the last change (no new-enemy problem).
ALTER TABLE tenants ADD COLUMN authz_token text NOT NULL DEFAULT '';

CREATE TABLE role_assignments (
    tenant_id  uuid NOT NULL DEFAULT current_tenant_id() REFERENCES tenants (id),
    user_id    uuid NOT NULL REFERENCES users (id),
    role       text NOT NULL CHECK (role IN ('admin', 'developer', 'operator', 'viewer', 'billing')),
    granted_by uuid REFERENCES users (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id, role)
);
CREATE INDEX role_assignments_created ON role_assignments (tenant_id, created_at, user_id);

ALTER TABLE role_assignments ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON role_assignments
    USING (tenant_id = current_tenant_id())
    WITH CHECK (tenant_id = current_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON role_assignments TO avb_app;
