package app_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/authn"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/store"
)

func wantErr(t *testing.T, r result, status int, code, reason string) {
	t.Helper()
	if r.status != status || r.code != code || r.reason != reason {
		t.Fatalf("got %d %s/%s, want %d %s/%s: %s", r.status, r.code, r.reason, status, code, reason, r.raw)
	}
}

func wantOK(t *testing.T, r result) map[string]any {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("got %d %s/%s: %s", r.status, r.code, r.reason, r.raw)
	}
	return r.body
}

func TestUsersAreRecordedOnFirstRequestAndScoped(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	acme := p.tenant("acme", store.TierPro)
	tok := p.token("alice", acme.ID.String(), "admin")

	me := wantOK(t, p.call("/avb.v1.UserService/GetMe", "{}", bearer(tok)...))["user"].(map[string]any)
	if me["email"] != "alice@example.com" || me["tenantId"] != acme.ID.String() || me["isActive"] != true {
		t.Fatalf("GetMe: %v", me)
	}
	wantOK(t, p.call("/avb.v1.UserService/UpdateMe", `{"preferences":{"theme":"dark"}}`, bearer(tok)...))
	me = wantOK(t, p.call("/avb.v1.UserService/GetMe", "{}", bearer(tok)...))["user"].(map[string]any)
	if me["preferences"].(map[string]any)["theme"] != "dark" {
		t.Fatalf("preferences not saved: %v", me)
	}

	// Concurrent first requests of one new user create one row.
	bobTok := p.token("bob", acme.ID.String(), "viewer")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { wantOK(t, p.call("/avb.v1.UserService/GetMe", "{}", bearer(bobTok)...)) })
	}
	wg.Wait()
	list := wantOK(t, p.call("/avb.v1.UserService/ListUsers", "{}", bearer(tok)...))["users"].([]any)
	if len(list) != 2 {
		t.Fatalf("want alice and bob, got %d users", len(list))
	}

	// A viewer may not administrate; an admin deactivates bob; bob is refused.
	wantErr(t, p.call("/avb.v1.UserService/ListUsers", "{}", bearer(bobTok)...), 403, "permission_denied", "permission_denied")
	var bobID string
	for _, u := range list {
		if u.(map[string]any)["subject"] == "bob" {
			bobID = u.(map[string]any)["id"].(string)
		}
	}
	wantOK(t, p.call("/avb.v1.UserService/DeactivateUser", `{"userId":"`+bobID+`"}`, bearer(tok)...))
	wantErr(t, p.call("/avb.v1.UserService/GetMe", "{}", bearer(bobTok)...), 401, "unauthenticated", "user_inactive")
}

func TestValidationNamesEachBadField(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	sys := p.token("root", "", "sysadmin")
	r := p.call("/avb.v1.AdminService/CreateTenant", `{"name":"","slug":"Not A Slug!"}`, bearer(sys)...)
	wantErr(t, r, 400, "invalid_argument", "validation_failed")
	if got := fieldViolations(r.body); !slices.Equal(got, []string{"name", "slug"}) {
		t.Fatalf("field violations %v, want [name slug]: %s", got, r.raw)
	}
}

func TestAdminTenantLifecycleAndPaging(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	sys := p.token("root", "", "sysadmin")
	for i := range 7 {
		wantOK(t, p.call("/avb.v1.AdminService/CreateTenant", fmt.Sprintf(`{"name":"Co %d","slug":"co-%d","tier":"TENANT_TIER_STARTER"}`, i, i), bearer(sys)...))
	}
	wantErr(t, p.call("/avb.v1.AdminService/CreateTenant", `{"name":"dup","slug":"co-1"}`, bearer(sys)...), 409, "already_exists", "already_exists")

	seen := map[string]bool{}
	token := ""
	for pages := 0; ; pages++ {
		body := fmt.Sprintf(`{"pageSize":3,"orderBy":"TENANT_ORDER_SLUG_ASC","query":"co-","pageToken":%q}`, token)
		res := wantOK(t, p.call("/avb.v1.AdminService/ListTenants", body, bearer(sys)...))
		for _, ten := range res["tenants"].([]any) {
			slug := ten.(map[string]any)["slug"].(string)
			if seen[slug] {
				t.Fatalf("%s listed twice", slug)
			}
			seen[slug] = true
		}
		token, _ = res["nextPageToken"].(string)
		if token == "" {
			break
		}
		if pages > 5 {
			t.Fatal("paging does not end")
		}
	}
	if len(seen) != 7 {
		t.Fatalf("paged %d tenants, want 7", len(seen))
	}
	wantErr(t, p.call("/avb.v1.AdminService/ListTenants", `{"pageToken":"garbage!"}`, bearer(sys)...), 400, "invalid_argument", "invalid_page_token")

	// Non-sysadmins cannot reach the admin service.
	ten := p.tenant("solo", store.TierFree)
	admin := p.token("ada", ten.ID.String(), "admin")
	wantErr(t, p.call("/avb.v1.AdminService/ListTenants", "{}", bearer(admin)...), 403, "permission_denied", "permission_denied")

	// Suspension takes effect at once; activation restores access.
	wantOK(t, p.call("/avb.v1.TenantService/GetTenant", "{}", bearer(admin)...))
	wantOK(t, p.call("/avb.v1.AdminService/SuspendTenant", `{"tenantId":"`+ten.ID.String()+`","reason":"unpaid"}`, bearer(sys)...))
	wantErr(t, p.call("/avb.v1.TenantService/GetTenant", "{}", bearer(admin)...), 403, "permission_denied", "tenant_suspended")
	wantOK(t, p.call("/avb.v1.AdminService/ActivateTenant", `{"tenantId":"`+ten.ID.String()+`"}`, bearer(sys)...))
	wantOK(t, p.call("/avb.v1.TenantService/GetTenant", "{}", bearer(admin)...))
	wantOK(t, p.call("/avb.v1.AdminService/DeleteTenant", `{"tenantId":"`+ten.ID.String()+`"}`, bearer(sys)...))
	wantErr(t, p.call("/avb.v1.TenantService/GetTenant", "{}", bearer(admin)...), 404, "not_found", "tenant_not_found")
}

func TestTenantSettingsWithFieldMask(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("brand", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	wantOK(t, p.call("/avb.v1.TenantService/UpdateTenantSettings",
		`{"settings":{"branding":{"displayName":"Brand","primaryColor":"#112233"},"voiceDefaults":{"voice":"en-us"}}}`, bearer(admin)...))
	res := wantOK(t, p.call("/avb.v1.TenantService/UpdateTenantSettings",
		`{"settings":{"branding":{"primaryColor":"#445566"}},"updateMask":"branding.primaryColor"}`, bearer(admin)...))
	s := res["tenant"].(map[string]any)["settings"].(map[string]any)
	b := s["branding"].(map[string]any)
	if b["primaryColor"] != "#445566" || b["displayName"] != "Brand" || s["voiceDefaults"].(map[string]any)["voice"] != "en-us" {
		t.Fatalf("mask did not limit the update: %v", s)
	}
	wantErr(t, p.call("/avb.v1.TenantService/UpdateTenantSettings", `{"settings":{},"updateMask":"nope"}`, bearer(admin)...), 400, "invalid_argument", "validation_failed")
	viewer := p.token("vic", ten.ID.String(), "viewer")
	wantErr(t, p.call("/avb.v1.TenantService/UpdateTenantSettings", `{"settings":{}}`, bearer(viewer)...), 403, "permission_denied", "permission_denied")
}

// Usage counts are exact after many concurrent requests and a clean stop.
func TestAPIKeyUsageIsExactAfterConcurrentRequestsAndShutdown(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("busy", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	created := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"load","scopes":["API_KEY_SCOPE_ADMIN"]}`, bearer(admin)...))
	secret := created["secret"].(string)
	keyID := created["apiKey"].(map[string]any)["id"].(string)

	const n = 300
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if i%2 == 0 {
				wantOK(t, p.call("/avb.v1.TenantService/GetTenant", "{}", "X-API-Key", secret))
			} else {
				wantOK(t, p.call("/avb.v1.TenantService/GetTenant", "{}", "Authorization", "Bearer "+secret))
			}
		})
	}
	wg.Wait()
	p.stop() // clean shutdown flushes what is pending

	db := ownerDB(t, p.owner)
	var count int64
	var ip string
	if err := db.QueryRow(context.Background(), "SELECT usage_count, last_used_ip FROM api_keys WHERE id = $1", keyID).Scan(&count, &ip); err != nil {
		t.Fatal(err)
	}
	if count != n || ip != "127.0.0.1" {
		t.Fatalf("usage_count %d (want %d), last_used_ip %q", count, n, ip)
	}
}

// A revoke on one instance is refused by another within a second, although
// the other had the key cached.
func TestRevokeReachesEveryInstanceWithinASecond(t *testing.T) {
	t.Parallel()
	_, a, b := twoInstances(t)
	ten := a.tenant("multi", store.TierPro)
	admin := a.token("ada", ten.ID.String(), "admin")
	created := wantOK(t, a.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"k","scopes":["API_KEY_SCOPE_ADMIN"]}`, bearer(admin)...))
	secret, id := created["secret"].(string), created["apiKey"].(map[string]any)["id"].(string)

	waitBus(t, b, secret) // b has verified (and cached) the key
	wantOK(t, a.call("/avb.v1.ApiKeyService/RevokeApiKey", `{"apiKeyId":"`+id+`"}`, bearer(admin)...))
	revoked := time.Now()
	for {
		r := b.call("/avb.v1.TenantService/GetTenant", "{}", "X-API-Key", secret)
		if r.reason == "api_key_revoked" {
			break
		}
		if time.Since(revoked) > time.Second {
			t.Fatalf("instance b still accepts the key %s after the revoke", time.Since(revoked))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("revoke reached the other instance in %s", time.Since(revoked))
}

// twoInstances starts two instances of one platform (one database, Redis,
// SpiceDB and issuer).
func twoInstances(t *testing.T) (*authn.DevIssuer, *platform, *platform) {
	t.Helper()
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	cfgA := identityConfig(t, owner, issuer.Issuer(), nil)
	a := startPlatform(t, cfgA, issuer, owner)
	b := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), map[string]string{
		"AVB_DATABASE_MIGRATE_ON_START": "false", "AVB_SPICEDB_TOKEN": cfgA.SpiceDB.Token}), issuer, owner)
	return issuer, a, b
}

// waitBus waits until p's invalidation bus is subscribed and the key is cached there.
func waitBus(t *testing.T, p *platform, secret string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !p.app.BusHealthy() {
		if time.Now().After(deadline) {
			t.Fatal("invalidation bus never subscribed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	wantOK(t, p.call("/avb.v1.TenantService/GetTenant", "{}", "X-API-Key", secret))
}

var _ = authn.APIKeyPrefix
