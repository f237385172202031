package authz

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/agentvoicebox/avb/platform/logging"
	"log/slog"
	"slices"

	"github.com/google/uuid"

	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

// Grants keeps SpiceDB in step with the database. The order of the two
// writes is chosen so that a crash between them never grants access the
// database does not show:
//   - granting (a role, a new key's scopes, a new tenant): the database row
//     first, then the relationship. A crash leaves a row without its grant:
//     less access than the database shows, and a retry completes it.
//   - revoking (a role, a key): the relationship first, then the database.
//     A crash leaves a row that no longer grants anything.
//
// After each write the tenant records the write's ZedToken, and checks on
// the tenant are at least as fresh as that token (no new-enemy problem).
type Grants struct {
	C  *Client
	DB *store.DB
	// TenantChanged drops the tenant from every instance's cache, so the
	// next request reads the new ZedToken.
	TenantChanged func(ctx context.Context, t *store.Tenant) error
	// Log, when set, hears a grant whose token could not be recorded or
	// broadcast.
	Log *slog.Logger
}

// TenantRoles lists the tenant roles, as relation names.
var TenantRoles = []string{RoleAdmin, RoleDeveloper, RoleOperator, RoleViewer, RoleBilling}

func tenantObject(id uuid.UUID) Object { return Object{Type: "tenant", ID: id.String()} }

// recordGrant records the token of a write that only adds access. Once the
// relationship is written the grant holds, so failing to record or
// broadcast its token (the database or Redis down) only delays it: checks
// elsewhere read at an older token, and see the grant seconds later, never
// more access. The request that made it succeeds, so nothing it created is
// lost (an API key's secret is shown once).
func (g *Grants) recordGrant(ctx context.Context, tenantID uuid.UUID, token string) error {
	if err := g.recordToken(ctx, tenantID, token); err != nil && g.Log != nil {
		g.Log.WarnContext(ctx, "a grant's token was not recorded or broadcast; it takes effect everywhere within seconds",
			"tenant_id", tenantID.String(), "error", err.Error())
	}
	return nil
}

// recordToken records the token of a write on the tenant and makes every
// instance read it: a revocation must not answer before this holds.
func (g *Grants) recordToken(ctx context.Context, tenantID uuid.UUID, token string) error {
	if token == "" {
		return nil
	}
	if err := g.DB.Tenants().SetAuthzToken(ctx, tenantID, token); err != nil {
		return fmt.Errorf("record authorization token: %w", err)
	}
	t, err := g.DB.Tenants().Get(ctx, tenantID)
	if err != nil {
		return err
	}
	if g.TenantChanged != nil {
		return g.TenantChanged(ctx, t)
	}
	return nil
}

// TenantCreated links a new tenant to the platform's sysadmins.
func (g *Grants) TenantCreated(ctx context.Context, t *store.Tenant) error {
	token, err := g.C.Write(ctx, []Relationship{{Resource: tenantObject(t.ID), Relation: "sysadmin", Subject: Platform, SubjectRelation: "sysadmin"}}, nil)
	if err != nil {
		return err
	}
	return g.recordGrant(ctx, t.ID, token)
}

// GrantRole gives user a role in the tenant of ctx.
func (g *Grants) GrantRole(ctx context.Context, userID uuid.UUID, role string, grantedBy *uuid.UUID) (*store.RoleAssignment, error) {
	a, _, err := g.grantRole(ctx, userID, role, grantedBy)
	return a, err
}

func (g *Grants) grantRole(ctx context.Context, userID uuid.UUID, role string, grantedBy *uuid.UUID) (*store.RoleAssignment, string, error) {
	tenantID, ok := tenancy.ID(ctx)
	if !ok {
		return nil, "", store.ErrNoTenant
	}
	if !slices.Contains(TenantRoles, role) {
		return nil, "", fmt.Errorf("unknown role %q", role)
	}
	a := &store.RoleAssignment{UserID: userID, Role: role, GrantedBy: grantedBy}
	if err := g.DB.Roles().Grant(ctx, a); err != nil {
		return nil, "", err
	}
	token, err := g.C.Write(ctx, []Relationship{{Resource: tenantObject(tenantID), Relation: role, Subject: Object{Type: "user", ID: userID.String()}}}, nil)
	if err != nil {
		return nil, "", err
	}
	return a, token, g.recordGrant(ctx, tenantID, token)
}

// RevokeRole takes a role from user in the tenant of ctx.
func (g *Grants) RevokeRole(ctx context.Context, userID uuid.UUID, role string) error {
	tenantID, ok := tenancy.ID(ctx)
	if !ok {
		return store.ErrNoTenant
	}
	token, err := g.C.Write(ctx, nil, []Relationship{{Resource: tenantObject(tenantID), Relation: role, Subject: Object{Type: "user", ID: userID.String()}}})
	if err != nil {
		return err
	}
	if err := g.recordToken(ctx, tenantID, token); err != nil {
		return err
	}
	return g.DB.Roles().Revoke(ctx, userID, role)
}

// IdPRoles maps the realm roles of a token to the tenant roles they grant,
// sorted and without repeats (tenant_admin is admin; other roles are not
// tenant roles and are ignored).
func IdPRoles(tokenRoles []string) []string {
	out := []string{}
	for _, r := range tokenRoles {
		if r == "tenant_admin" {
			r = RoleAdmin
		}
		if slices.Contains(TenantRoles, r) && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	slices.Sort(out)
	return out
}

// SyncIdPRoles makes a user's tenant roles follow their token: the roles the
// token grants that were not applied yet are granted, and the ones an
// earlier token granted that this one no longer carries are revoked (unless
// someone granted that role by hand since). It is idempotent, and it records
// the applied set last, so a failure part way (SpiceDB or the database down)
// is completed by the next request. It returns the ZedToken of its write.
func (g *Grants) SyncIdPRoles(ctx context.Context, u *store.User, tokenRoles []string) (string, error) {
	tenantID, ok := tenancy.ID(ctx)
	if !ok {
		return "", store.ErrNoTenant
	}
	want := IdPRoles(tokenRoles)
	held, _, err := g.DB.Roles().List(ctx, u.ID, len(TenantRoles), "")
	if err != nil {
		return "", fmt.Errorf("sync roles: %w", err)
	}
	user := Object{Type: "user", ID: u.ID.String()}
	var touch, del []Relationship
	var revoke []string
	for _, r := range want {
		// The row first, then the relationship (less access on a crash).
		if err := g.DB.Roles().Grant(ctx, &store.RoleAssignment{UserID: u.ID, Role: r}); err != nil {
			return "", fmt.Errorf("sync role %s: %w", r, err)
		}
		touch = append(touch, Relationship{Resource: tenantObject(tenantID), Relation: r, Subject: user})
	}
	for _, a := range held {
		if slices.Contains(u.IdPRoles, a.Role) && !slices.Contains(want, a.Role) && a.GrantedBy == nil {
			del = append(del, Relationship{Resource: tenantObject(tenantID), Relation: a.Role, Subject: user})
			revoke = append(revoke, a.Role)
		}
	}
	// Grants and revokes in one atomic write; the revoked rows go after it.
	token, err := g.C.Write(ctx, touch, del)
	if err != nil {
		return "", fmt.Errorf("sync roles: %w", err)
	}
	if err := g.recordToken(ctx, tenantID, token); err != nil {
		return "", err
	}
	for _, r := range revoke {
		if err := g.DB.Roles().Revoke(ctx, u.ID, r); err != nil {
			return "", fmt.Errorf("sync role %s: %w", r, err)
		}
	}
	// One audit entry per change the provider made.
	added := []string{}
	for _, r := range want {
		if !slices.Contains(u.IdPRoles, r) {
			added = append(added, r)
		}
	}
	changes, _ := json.Marshal(map[string]any{"granted": added, "revoked": append([]string{}, revoke...), "source": "identity_provider"})
	// The entry commits with the user's new roles.
	actx, audited := store.WithAudit(ctx, store.AuditEntry{ActorType: "system", Action: "permission_change",
		ResourceType: "user", ResourceID: u.ID.String(), Description: "roles synced from the identity provider",
		RequestID: logging.RequestID(ctx),
		OldValues: mustJSON(map[string]any{"roles": u.IdPRoles}), NewValues: changes})
	if err := g.DB.Users().SetIdPRoles(actx, u.ID, want); err != nil {
		return "", fmt.Errorf("sync roles: %w", err)
	}
	if !audited.Recorded() {
		return "", fmt.Errorf("sync roles: the audit entry was not recorded")
	}
	return token, nil
}

// KeyCreated grants a stored key the roles its scopes map to.
func (g *Grants) KeyCreated(ctx context.Context, k *store.APIKey) error {
	key := Object{Type: "api_key", ID: k.ID.String()}
	rels := []Relationship{{Resource: key, Relation: "tenant", Subject: tenantObject(k.TenantID)}}
	for _, s := range k.Scopes {
		if role, ok := scopeRoles[s]; ok {
			rels = append(rels, Relationship{Resource: tenantObject(k.TenantID), Relation: role, Subject: key})
		}
	}
	token, err := g.C.Write(ctx, rels, nil)
	if err != nil {
		return err
	}
	return g.recordGrant(ctx, k.TenantID, token)
}

// KeyRevoked removes every grant of a key. Call it before the database revoke.
func (g *Grants) KeyRevoked(ctx context.Context, tenantID, keyID uuid.UUID) error {
	token, err := g.C.DeleteAll(ctx, Object{Type: "api_key", ID: keyID.String()})
	if err != nil {
		return err
	}
	return g.recordToken(ctx, tenantID, token)
}

// ResourceCreated links a stored resource (project, persona, voice_config,
// theme) to its tenant, and to its project when it has one, so tenant and
// project roles reach it. Writing it again is harmless (a retried create).
func (g *Grants) ResourceCreated(ctx context.Context, typ string, id, tenantID uuid.UUID, project *uuid.UUID) error {
	obj := Object{Type: typ, ID: id.String()}
	rels := []Relationship{{Resource: obj, Relation: "tenant", Subject: tenantObject(tenantID)}}
	if project != nil {
		rels = append(rels, Relationship{Resource: obj, Relation: "project", Subject: Object{Type: "project", ID: project.String()}})
	}
	token, err := g.C.Write(ctx, rels, nil)
	if err != nil {
		return err
	}
	return g.recordGrant(ctx, tenantID, token)
}

// ProjectRoles lists the project roles, as relation names.
var ProjectRoles = []string{RoleAdmin, RoleDeveloper, RoleOperator, RoleViewer}

// ProjectMember gives (grant) or takes (revoke) a user's role on a project:
// the row first when granting, the relationship first when revoking.
func (g *Grants) ProjectMember(ctx context.Context, projectID, userID uuid.UUID, role string, grant bool, grantedBy *uuid.UUID) error {
	tenantID, ok := tenancy.ID(ctx)
	if !ok {
		return store.ErrNoTenant
	}
	if !slices.Contains(ProjectRoles, role) {
		return fmt.Errorf("unknown project role %q", role)
	}
	rel := []Relationship{{Resource: Object{Type: "project", ID: projectID.String()}, Relation: role, Subject: Object{Type: "user", ID: userID.String()}}}
	if grant {
		if err := g.DB.ProjectMembers().Add(ctx, projectID, userID, role, grantedBy); err != nil {
			return err
		}
		token, err := g.C.Write(ctx, rel, nil)
		if err != nil {
			return err
		}
		return g.recordGrant(ctx, tenantID, token)
	}
	token, err := g.C.Write(ctx, nil, rel)
	if err != nil {
		return err
	}
	if err := g.recordToken(ctx, tenantID, token); err != nil {
		return err
	}
	return g.DB.ProjectMembers().Remove(ctx, projectID, userID, role)
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
