package app_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/store"
)

// roleModel is the documented role model (authz/schema.zed): which tenant
// roles grant each permission. The property below checks the running system
// against it.
var roleModel = map[string][]string{
	"manage":         {"admin"},
	"administrate":   {"admin"},
	"develop":        {"admin", "developer"},
	"operate":        {"admin", "developer", "operator"},
	"view":           {"admin", "developer", "operator", "viewer", "billing"},
	"billing_access": {"admin", "billing"},
	"platform":       {},
}

var scopeModel = map[string]string{"admin": "admin", "realtime": "operator", "billing": "billing"}

type action struct {
	proc, body, perm string
}

var actions = []action{
	{"/avb.v1.TenantService/GetTenant", "{}", "view"},
	{"/avb.v1.TenantService/UpdateTenantSettings", `{"settings":{}}`, "manage"},
	{"/avb.v1.UserService/ListUsers", "{}", "administrate"},
	{"/avb.v1.ApiKeyService/ListApiKeys", "{}", "develop"},
	{"/avb.v1.RoleService/ListRoleAssignments", "{}", "view"},
	{"/avb.v1.AdminService/ListTenants", "{}", "platform"},
}

func allowedBy(roles []string, perm string) bool {
	for _, r := range roles {
		if slices.Contains(roleModel[perm], r) {
			return true
		}
	}
	return false
}

// Property 8: with random role assignments (granted and revoked through
// RoleService) and random API key scopes, every action is allowed exactly
// when the role model says so and is otherwise permission_denied; a user of
// tenant A never reaches tenant B.
func TestPropertyAuthorizationFollowsTheRoleModel(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	a, b := p.tenant("alpha", store.TierEnterprise), p.tenant("bravo", store.TierEnterprise)
	boss := p.token("boss", a.ID.String(), "admin")
	bossB := p.token("bossb", b.ID.String(), "admin")
	wantOK(t, p.call("/avb.v1.UserService/GetMe", "{}", bearer(bossB)...))
	bKey := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"b","scopes":["API_KEY_SCOPE_ADMIN"]}`, bearer(bossB)...))["apiKey"].(map[string]any)["id"].(string)

	type member struct {
		token, id string
		roles     []string
	}
	members := make([]*member, 3)
	for i := range members {
		tok := p.token(fmt.Sprintf("m%d", i), a.ID.String()) // no roles from the identity provider
		id := wantOK(t, p.call("/avb.v1.UserService/GetMe", "{}", bearer(tok)...))["user"].(map[string]any)["id"].(string)
		members[i] = &member{token: tok, id: id}
	}
	allRoles := []string{"admin", "developer", "operator", "viewer", "billing"}
	n := 0
	rapid.Check(t, func(rt *rapid.T) {
		n++
		m := members[rapid.IntRange(0, len(members)-1).Draw(rt, "member")]
		next := rapid.SliceOfDistinct(rapid.SampledFrom(allRoles), rapid.ID[string]).Draw(rt, "roles")
		for _, r := range allRoles {
			body := fmt.Sprintf(`{"userId":%q,"role":"TENANT_ROLE_%s"}`, m.id, strings.ToUpper(r))
			switch had, has := slices.Contains(m.roles, r), slices.Contains(next, r); {
			case has && !had:
				wantOK(t, p.call("/avb.v1.RoleService/GrantRole", body, bearer(boss)...))
			case had && !has:
				wantOK(t, p.call("/avb.v1.RoleService/RevokeRole", body, bearer(boss)...))
			}
		}
		m.roles = next

		// What GetTenant says the member may do (what the console offers)
		// is exactly what the role model allows.
		if allowedBy(m.roles, "view") {
			var want, got []string
			for _, perm := range []string{"view", "operate", "develop", "administrate", "billing_access"} {
				if allowedBy(m.roles, perm) {
					want = append(want, perm)
				}
			}
			for _, perm := range items(wantOK(t, p.call("/avb.v1.TenantService/GetTenant", "{}", bearer(m.token)...)), "permissions") {
				got = append(got, perm.(string))
			}
			if !slices.Equal(got, want) {
				rt.Fatalf("roles %v: GetTenant lists permissions %v, the model %v", m.roles, got, want)
			}
		}

		act := actions[rapid.IntRange(0, len(actions)-1).Draw(rt, "action")]
		r := p.call(act.proc, act.body, bearer(m.token)...)
		if allowedBy(m.roles, act.perm) {
			if r.status != 200 {
				rt.Fatalf("roles %v: %s refused: %s", m.roles, act.proc, r.raw)
			}
		} else if r.status != 403 || r.reason != "permission_denied" {
			rt.Fatalf("roles %v: %s not denied: %d %s", m.roles, act.proc, r.status, r.raw)
		}

		// Never into tenant B: by header, or by naming B's resources.
		wantReason := "tenant_mismatch"
		if act.perm == "platform" {
			wantReason = "permission_denied" // platform RPCs act in no tenant
		}
		if r := p.call(act.proc, act.body, append(bearer(m.token), "X-Tenant-ID", "bravo")...); r.reason != wantReason {
			rt.Fatalf("reached tenant B by header: %d %s", r.status, r.raw)
		}
		if r := p.call("/avb.v1.ApiKeyService/GetApiKey", `{"apiKeyId":"`+bKey+`"}`, bearer(m.token)...); r.status == 200 {
			rt.Fatalf("read tenant B's key: %s", r.raw)
		}

		// An API key with random scopes acts with the roles they map to.
		if n%4 == 0 {
			scopes := rapid.SliceOfNDistinct(rapid.SampledFrom([]string{"admin", "realtime", "billing"}), 1, 3, rapid.ID[string]).Draw(rt, "scopes")
			var enums, roles []string
			for _, s := range scopes {
				enums = append(enums, `"API_KEY_SCOPE_`+strings.ToUpper(s)+`"`)
				roles = append(roles, scopeModel[s])
			}
			created := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"p8","scopes":[`+strings.Join(enums, ",")+`]}`, bearer(boss)...))
			r := p.call(act.proc, act.body, "X-API-Key", created["secret"].(string))
			if allowedBy(roles, act.perm) != (r.status == 200) {
				rt.Fatalf("key scopes %v: %s got %d %s", scopes, act.proc, r.status, r.raw)
			}
			wantOK(t, p.call("/avb.v1.ApiKeyService/RevokeApiKey", `{"apiKeyId":"`+created["apiKey"].(map[string]any)["id"].(string)+`"}`, bearer(boss)...))
		}
	})
}

// SpiceDB down: every decision that needs SpiceDB fails closed with
// unavailable, and so does every authorization write; when it is back (same
// datastore), calls succeed without restarting avb. A decision already made
// at the tenant's current ZedToken stays valid (nothing can change it while
// SpiceDB takes no writes), so it is served from the decision cache.
func TestAuthorizationFailsClosedAndRecovers(t *testing.T) {
	t.Parallel()
	spice := testenv.StartSpiceDBPostgres(t)
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), map[string]string{
		"AVB_SPICEDB_ENDPOINT": spice.Addr(), "AVB_SPICEDB_TOKEN": testenv.SpiceDBKey}), issuer, owner)
	ten := p.tenant("fc", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	viewer := p.token("vic", ten.ID.String(), "viewer")
	get := "/avb.v1.TenantService/GetTenant"
	wantOK(t, p.call(get, "{}", bearer(admin)...))
	vic := wantOK(t, p.call("/avb.v1.UserService/GetMe", "{}", bearer(viewer)...))["user"].(map[string]any)["id"].(string)
	wantOK(t, p.call(get, "{}", bearer(viewer)...))

	spice.Stop()
	wantErr(t, p.call("/avb.v1.UserService/ListUsers", "{}", bearer(admin)...), 503, "unavailable", "dependency_unavailable")
	wantErr(t, p.call("/avb.v1.ApiKeyService/ListApiKeys", "{}", bearer(admin)...), 503, "unavailable", "dependency_unavailable")
	wantErr(t, p.call("/avb.v1.RoleService/RevokeRole", `{"userId":"`+vic+`","role":"TENANT_ROLE_VIEWER"}`, bearer(admin)...),
		503, "unavailable", "dependency_unavailable")

	spice.Start()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := p.call(get, "{}", bearer(admin)...)
		if r.status == 200 {
			break
		}
		if r.code != "unavailable" || time.Now().After(deadline) {
			t.Fatalf("after SpiceDB came back: %d %s", r.status, r.raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
	wantOK(t, p.call("/avb.v1.UserService/ListUsers", "{}", bearer(admin)...))
	// The failed revoke changed nothing: the viewer still views.
	wantOK(t, p.call(get, "{}", bearer(viewer)...))
}
