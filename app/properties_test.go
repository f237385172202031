package app_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/emptypb"

	"google.golang.org/protobuf/reflect/protoreflect"
	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/apierror"
	"github.com/agentvoicebox/avb/authn"
	"github.com/agentvoicebox/avb/policy"
	"github.com/agentvoicebox/avb/store"
)

// tenantProcedures lists every RPC that acts inside a tenant.
func tenantProcedures(t *testing.T) []protoreflect.MethodDescriptor {
	t.Helper()
	var out []protoreflect.MethodDescriptor
	for md := range policy.Methods() {
		if policy.For(procedureOf(md)).NeedsTenant() {
			out = append(out, md)
		}
	}
	if len(out) == 0 {
		t.Fatal("no tenant RPCs found")
	}
	return out
}

// Property 3: for every tenant RPC, a request without a tenant gets
// invalid_argument/tenant_required, and one for a suspended tenant gets
// permission_denied/tenant_suspended, whether it comes with a token or a key.
func TestPropertyEveryTenantRPCRefusesMissingAndSuspendedTenants(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("frozen", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"k","scopes":["API_KEY_SCOPE_ADMIN","API_KEY_SCOPE_REALTIME","API_KEY_SCOPE_BILLING"]}`, bearer(admin)...))["secret"].(string)
	noTenant := p.token("drifter", "", "admin")
	sys := p.token("root", "", "sysadmin")
	wantOK(t, p.call("/avb.v1.AdminService/SuspendTenant", `{"tenantId":"`+ten.ID.String()+`"}`, bearer(sys)...))

	for _, md := range tenantProcedures(t) {
		for _, c := range []struct {
			headers      []string
			code, reason string
		}{
			{bearer(noTenant), "invalid_argument", "tenant_required"},
			{bearer(admin), "permission_denied", "tenant_suspended"},
			{[]string{"X-API-Key", key}, "permission_denied", "tenant_suspended"},
			{nil, "unauthenticated", "unauthenticated"},
		} {
			if code, reason := p.callAny(md, c.headers...); code != c.code || reason != c.reason {
				t.Fatalf("%s: got %s/%s, want %s/%s", md.FullName(), code, reason, c.code, c.reason)
			}
		}
	}
}

func procedureOf(md protoreflect.MethodDescriptor) string {
	return fmt.Sprintf("/%s/%s", md.Parent().FullName(), md.Name())
}

// callAny calls any RPC, unary or streaming, with an empty request over
// gRPC, and returns the error's code and reason ("ok" on success).
func (p *platform) callAny(md protoreflect.MethodDescriptor, headers ...string) (string, string) {
	client := connect.NewClient[emptypb.Empty, emptypb.Empty](h2c(), p.base+procedureOf(md), connect.WithGRPC())
	set := func(h http.Header) {
		for i := 0; i+1 < len(headers); i += 2 {
			h.Set(headers[i], headers[i+1])
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	switch {
	case md.IsStreamingClient():
		stream := client.CallBidiStream(ctx)
		set(stream.RequestHeader())
		_ = stream.Send(&emptypb.Empty{})
		_, err = stream.Receive()
	case md.IsStreamingServer():
		req := connect.NewRequest(&emptypb.Empty{})
		set(req.Header())
		var s *connect.ServerStreamForClient[emptypb.Empty]
		if s, err = client.CallServerStream(ctx, req); err == nil {
			if s.Receive() {
				s.Close() // a first message: the stream was allowed (Subscribe stays open)
				return "ok", ""
			}
			err = s.Err()
		}
	default:
		req := connect.NewRequest(&emptypb.Empty{})
		set(req.Header())
		_, err = client.CallUnary(ctx, req)
	}
	if err == nil {
		return "ok", ""
	}
	return connect.CodeOf(err).String(), apierror.Reason(err)
}

// Property 2 end to end: claim, header and subdomain each select the tenant,
// in that order, and credentials never reach into a tenant they do not belong to.
func TestTenantResolutionEndToEnd(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	acme, beta := p.tenant("acme", store.TierPro), p.tenant("beta", store.TierPro)
	sys := p.token("root", "", "sysadmin")
	slugOf := func(r result) string {
		t.Helper()
		return wantOK(t, r)["tenant"].(map[string]any)["slug"].(string)
	}
	get := "/avb.v1.TenantService/GetTenant"

	if got := slugOf(p.call(get, "{}", append(bearer(sys), "X-Tenant-ID", "acme")...)); got != "acme" {
		t.Fatalf("header: %s", got)
	}
	if got := slugOf(p.call(get, "{}", append(bearer(sys), "X-Tenant-ID", beta.ID.String())...)); got != "beta" {
		t.Fatalf("header by id: %s", got)
	}
	if got := slugOf(p.call(get, "{}", append(bearer(sys), "Host", "beta.avb.test")...)); got != "beta" {
		t.Fatalf("subdomain: %s", got)
	}
	if got := slugOf(p.call(get, "{}", append(bearer(sys), "Host", "beta.avb.test", "X-Tenant-ID", "acme")...)); got != "acme" {
		t.Fatalf("header must beat subdomain: %s", got)
	}
	wantErr(t, p.call(get, "{}", append(bearer(sys), "X-Tenant-ID", "nope")...), 404, "not_found", "tenant_not_found")

	// A token's claim wins, and a request naming another tenant is refused.
	alice := p.token("alice", acme.ID.String(), "admin")
	if got := slugOf(p.call(get, "{}", bearer(alice)...)); got != "acme" {
		t.Fatalf("claim: %s", got)
	}
	if got := slugOf(p.call(get, "{}", append(bearer(alice), "X-Tenant-ID", "acme")...)); got != "acme" {
		t.Fatalf("claim with the same header: %s", got)
	}
	wantErr(t, p.call(get, "{}", append(bearer(alice), "X-Tenant-ID", "beta")...), 403, "permission_denied", "tenant_mismatch")
	wantErr(t, p.call(get, "{}", append(bearer(alice), "Host", "beta.avb.test")...), 403, "permission_denied", "tenant_mismatch")

	// Without a claim, a user reaches only tenants they already belong to.
	aliceNoClaim := p.token("alice", "", "admin")
	if got := slugOf(p.call(get, "{}", append(bearer(aliceNoClaim), "X-Tenant-ID", "acme")...)); got != "acme" {
		t.Fatalf("member by header: %s", got)
	}
	wantErr(t, p.call(get, "{}", append(bearer(aliceNoClaim), "X-Tenant-ID", "beta")...), 403, "permission_denied", "tenant_mismatch")

	// An API key carries its tenant; naming another one is refused.
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"k","scopes":["API_KEY_SCOPE_ADMIN"]}`, bearer(alice)...))["secret"].(string)
	if got := slugOf(p.call(get, "{}", "X-API-Key", key)); got != "acme" {
		t.Fatalf("key: %s", got)
	}
	wantErr(t, p.call(get, "{}", "X-API-Key", key, "X-Tenant-ID", "beta"), 403, "permission_denied", "tenant_mismatch")
	wantErr(t, p.call(get, "{}", "X-API-Key", key, "Host", "beta.avb.test"), 403, "permission_denied", "tenant_mismatch")
}

// Property 5: valid tokens are accepted; expired ones get token_expired;
// tampered, garbage, foreign-key, wrong-issuer and wrong-audience ones get
// invalid_token. Key rotation at the issuer is picked up.
func TestPropertyTokenVerification(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("tok", store.TierEnterprise)
	impostor, err := authn.NewDevIssuer(p.issuer.Issuer()) // same issuer URL, its own key
	if err != nil {
		t.Fatal(err)
	}
	get := "/avb.v1.UserService/GetMe"
	rotated := false
	rapid.Check(t, func(rt *rapid.T) {
		sub := rapid.StringMatching(`[a-z]{3,12}`).Draw(rt, "sub")
		tok := authn.Token{Subject: sub, Email: sub + "@x.test", TenantID: ten.ID.String(), Roles: []string{"viewer"}, Audience: "avb-api"}
		kind := rapid.SampledFrom([]string{"valid", "expired", "tampered", "garbage", "impostor", "issuer", "audience", "rotated"}).Draw(rt, "kind")
		issuer := p.issuer
		switch kind {
		case "expired":
			tok.TTL = -time.Duration(rapid.IntRange(1, 3600).Draw(rt, "seconds ago")) * time.Second
		case "impostor":
			issuer = impostor
		case "issuer":
			tok.Issuer = "http://127.0.0.1:1/realms/other"
		case "audience":
			tok.Audience = "someone-else"
		case "rotated":
			if !rotated {
				if err := p.issuer.Rotate(); err != nil {
					rt.Fatal(err)
				}
				rotated = true
			}
		}
		raw, err := issuer.Issue(tok)
		if err != nil {
			rt.Fatal(err)
		}
		switch kind {
		case "tampered":
			parts := strings.Split(raw, ".")
			payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
			payload = []byte(strings.Replace(string(payload), `"viewer"`, `"admin"`, 1))
			parts[1] = base64.RawURLEncoding.EncodeToString(payload)
			raw = strings.Join(parts, ".")
		case "garbage":
			raw = rapid.StringMatching(`[A-Za-z0-9._-]{1,300}`).Draw(rt, "garbage")
		}
		r := p.call(get, "{}", bearer(raw)...)
		switch kind {
		case "valid", "rotated":
			if r.status != 200 {
				rt.Fatalf("%s token refused: %d %s", kind, r.status, r.raw)
			}
		case "expired":
			if r.reason != "token_expired" || r.code != "unauthenticated" {
				rt.Fatalf("expired token: %d %s", r.status, r.raw)
			}
		default:
			if r.reason != "invalid_token" || r.code != "unauthenticated" {
				rt.Fatalf("%s token: %d %s", kind, r.status, r.raw)
			}
		}
	})
}

// Property 6 and 7 end to end: the secret is shown once and never stored;
// keys authenticate; revoked, expired and unknown keys get their reasons;
// a rotated key works until its grace period ends; limits hold.
func TestAPIKeyLifecycle(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("keys", store.TierFree) // free tier: 2 keys
	admin := p.token("ada", ten.ID.String(), "admin")
	get := "/avb.v1.TenantService/GetTenant"

	created := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"ci","scopes":["API_KEY_SCOPE_ADMIN"]}`, bearer(admin)...))
	secret := created["secret"].(string)
	id := created["apiKey"].(map[string]any)["id"].(string)
	if !keyShape.MatchString(secret) || !strings.HasPrefix(secret, created["apiKey"].(map[string]any)["prefix"].(string)) {
		t.Fatalf("secret %q / prefix %v", secret, created["apiKey"])
	}
	for _, r := range []result{
		p.call("/avb.v1.ApiKeyService/GetApiKey", `{"apiKeyId":"`+id+`"}`, bearer(admin)...),
		p.call("/avb.v1.ApiKeyService/ListApiKeys", `{}`, bearer(admin)...),
	} {
		if wantOK(t, r); strings.Contains(r.raw, secret) || strings.Contains(r.raw, secret[12:]) {
			t.Fatalf("secret shown again: %s", r.raw)
		}
	}
	var row string
	if err := ownerDB(t, p.owner).QueryRow(context.Background(), "SELECT row_to_json(k)::text FROM api_keys k WHERE id = $1", id).Scan(&row); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(row, secret[12:]) {
		t.Fatalf("secret stored: %s", row)
	}

	wantOK(t, p.call(get, "{}", "X-API-Key", secret))
	wantOK(t, p.call(get, "{}", "Authorization", "Bearer "+secret))
	unknown, _, _ := authn.NewAPIKey()
	wantErr(t, p.call(get, "{}", "X-API-Key", unknown), 401, "unauthenticated", "invalid_api_key")
	wantErr(t, p.call(get, "{}", "X-API-Key", "avb_short"), 401, "unauthenticated", "invalid_api_key")

	// Limits: the free tier holds two active keys.
	short := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey",
		fmt.Sprintf(`{"name":"short","scopes":["API_KEY_SCOPE_REALTIME"],"expireTime":%q}`, time.Now().Add(1500*time.Millisecond).UTC().Format(time.RFC3339Nano)), bearer(admin)...))
	wantErr(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"third","scopes":["API_KEY_SCOPE_ADMIN"]}`, bearer(admin)...),
		429, "resource_exhausted", "tenant_limit_exceeded")

	// Rotation: the old key works during the grace period, then expires.
	rot := wantOK(t, p.call("/avb.v1.ApiKeyService/RotateApiKey", `{"apiKeyId":"`+id+`","gracePeriod":"1s"}`, bearer(admin)...))
	next := rot["secret"].(string)
	rotatedAt := time.Now()
	wantOK(t, p.call(get, "{}", "X-API-Key", secret))
	wantOK(t, p.call(get, "{}", "X-API-Key", next))
	wantErr(t, p.call("/avb.v1.ApiKeyService/RotateApiKey", `{"apiKeyId":"`+id+`"}`, bearer(admin)...), 400, "failed_precondition", "conflict")
	time.Sleep(time.Until(rotatedAt.Add(1100 * time.Millisecond)))
	wantErr(t, p.call(get, "{}", "X-API-Key", secret), 401, "unauthenticated", "api_key_expired")
	wantOK(t, p.call(get, "{}", "X-API-Key", next))

	// The short-lived key has expired by now too.
	time.Sleep(time.Until(rotatedAt.Add(1600 * time.Millisecond)))
	wantErr(t, p.call(get, "{}", "X-API-Key", short["secret"].(string)), 401, "unauthenticated", "api_key_expired")

	// Revocation.
	nextID := rot["apiKey"].(map[string]any)["id"].(string)
	wantOK(t, p.call("/avb.v1.ApiKeyService/RevokeApiKey", `{"apiKeyId":"`+nextID+`"}`, bearer(admin)...))
	wantErr(t, p.call(get, "{}", "X-API-Key", next), 401, "unauthenticated", "api_key_revoked")

	// Scopes: a realtime key cannot manage keys.
	rt := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))["secret"].(string)
	wantErr(t, p.call("/avb.v1.ApiKeyService/ListApiKeys", "{}", "X-API-Key", rt), 403, "permission_denied", "permission_denied")
}
