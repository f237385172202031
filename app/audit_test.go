package app_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/authn"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/policy"
	"github.com/agentvoicebox/avb/server"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/telephony"
	"github.com/agentvoicebox/avb/tenancy"
)

// auditTour calls RPCs and checks, call by call, the entries they leave.
type auditTour struct {
	t      *testing.T
	p      *platform
	ctx    context.Context // the tenant's
	seen   map[string]int  // procedure -> entries checked
	secret []string        // values that must never reach the log
}

// entries returns the tenant's entries, oldest first.
func (a *auditTour) entries(ctx context.Context) []store.AuditEntry {
	a.t.Helper()
	var all []store.AuditEntry
	token := ""
	for {
		page, next, err := a.p.app.DB().AuditLog().List(ctx, store.AuditFilter{}, 500, token)
		if err != nil {
			a.t.Fatal(err)
		}
		all = append(all, page...)
		if next == "" {
			break
		}
		token = next
	}
	for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
		all[i], all[j] = all[j], all[i]
	}
	return all
}

// call makes one call and checks that it added exactly one entry to the
// log of ctx (none when it fails), with the declared action and resource,
// its request id, the caller and the client's user agent.
func (a *auditTour) call(ctx context.Context, procedure, body string, headers ...string) map[string]any {
	a.t.Helper()
	r := a.p.call(procedure, body, append(headers, "User-Agent", "audit-tour/1.0")...)
	want := policy.AuditOf(procedure)
	id := r.header.Get("X-Request-ID")
	var mine []store.AuditEntry // the call's own entry (a first request may also record a login)
	for _, e := range a.entries(ctx) {
		if e.RequestID == id && e.Action == want.Action {
			mine = append(mine, e)
		}
	}
	if r.status != http.StatusOK {
		if len(mine) != 0 {
			a.t.Fatalf("%s failed (%d %s) yet recorded %d entries", procedure, r.status, r.reason, len(mine))
		}
		return nil
	}
	if len(mine) != 1 {
		a.t.Fatalf("%s recorded %d entries, want 1", procedure, len(mine))
	}
	e := mine[0]
	if e.ResourceType != want.ResourceType || (e.ResourceID == "" && want.ResourceType != "client_token" && want.ResourceType != "notification") || e.UserAgent != "audit-tour/1.0" || e.IPAddress == "" || e.Description == "" {
		a.t.Fatalf("%s recorded %+v; want action %s on %s", procedure, e, want.Action, want.ResourceType)
	}
	// (A platform sysadmin is no user of the tenant: named by email only.)
	if e.ActorType == "user" && ((e.ActorID == nil && !strings.HasPrefix(procedure, "/avb.v1.AdminService/")) || !strings.HasSuffix(e.ActorEmail, "@example.com")) {
		a.t.Fatalf("%s: a user actor without id or email: %+v", procedure, e)
	}
	a.seen[procedure]++
	if s, ok := r.body["secret"].(string); ok {
		a.secret = append(a.secret, s)
	}
	return r.body
}

// Every state-changing RPC records exactly one entry, in its tenant's
// log, as it succeeds (and none as it fails); the chain verifies after
// it all; no secret, key hash or token reaches the log.
func TestEveryMutatingRPCRecordsOneEntry(t *testing.T) {
	t.Parallel()
	// With Vault Transit, so that tenant secrets can be set.
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	v := testenv.VaultAvb(t, testenv.VaultOptions{Transit: true, Secrets: map[string]any{"openai_api_key": "sk-platform-audited"}})
	env := map[string]string{"AVB_SIP_ADDR": "127.0.0.1:0", "AVB_SIP_RTP_PORTS": "35000-35999"}
	for k, val := range v.Env {
		env[k] = val
	}
	p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), env), issuer, owner)
	ten := p.tenant("audited", store.TierPro)
	a := &auditTour{t: t, p: p, ctx: tenancy.With(context.Background(), ten.ID), seen: map[string]int{}}
	ctx := a.ctx
	adminTok := p.token("ada", ten.ID.String(), "admin")
	admin := bearer(adminTok)
	a.secret = append(a.secret, adminTok)

	proj := str(a.call(ctx, "/avb.v1.ProjectService/CreateProject", `{"name":"Audited","description":"first"}`, admin...), "project", "id")
	a.call(ctx, "/avb.v1.ProjectService/CreateProject", `{"name":"Audited"}`, admin...) // taken: fails, records nothing
	a.call(ctx, "/avb.v1.ProjectService/UpdateProject", `{"projectId":"`+proj+`","project":{"description":"second"},"updateMask":"description"}`, admin...)
	last := a.entries(ctx)
	if u := last[len(last)-1]; string(u.OldValues) != `{"description": "first"}` || string(u.NewValues) != `{"description": "second"}` {
		t.Fatalf("an update records only what it changed: old %s new %s", u.OldValues, u.NewValues)
	}
	persona := str(a.call(ctx, "/avb.v1.PersonaService/CreatePersona", `{"persona":{"name":"Ada","instructions":"Be brief."}}`, admin...), "persona", "id")
	a.call(ctx, "/avb.v1.PersonaService/UpdatePersona", `{"personaId":"`+persona+`","persona":{"voice":"en-us"},"updateMask":"voice"}`, admin...)
	vc := str(a.call(ctx, "/avb.v1.VoiceConfigService/CreateVoiceConfig", `{"voiceConfig":{"projectId":"`+proj+`","name":"Phone","voice":"en-gb"}}`, admin...), "voiceConfig", "id")
	a.call(ctx, "/avb.v1.VoiceConfigService/UpdateVoiceConfig", `{"voiceConfigId":"`+vc+`","voiceConfig":{"voice":"en-us"},"updateMask":"voice"}`, admin...)
	theme := str(a.call(ctx, "/avb.v1.ThemeService/CreateTheme", `{"theme":{"name":"Light","primaryColor":"#112233"}}`, admin...), "theme", "id")
	a.call(ctx, "/avb.v1.ThemeService/UpdateTheme", `{"themeId":"`+theme+`","theme":{"isDefault":true},"updateMask":"isDefault"}`, admin...)
	a.call(ctx, "/avb.v1.ThemeService/DeleteTheme", `{"themeId":"`+theme+`"}`, admin...)

	key := a.call(ctx, "/avb.v1.ApiKeyService/CreateApiKey", `{"name":"server","scopes":["API_KEY_SCOPE_REALTIME"]}`, admin...)
	keyID := str(key, "apiKey", "id")
	a.call(ctx, "/avb.v1.ApiKeyService/RotateApiKey", `{"apiKeyId":"`+keyID+`","gracePeriod":"60s"}`, admin...)
	rt := a.secret[len(a.secret)-1] // the rotated secret: the one that stays valid

	bobTok := p.token("bob", ten.ID.String())
	a.secret = append(a.secret, bobTok)
	bob := str(wantOK(t, p.call("/avb.v1.UserService/GetMe", `{}`, bearer(bobTok)...)), "user", "id")
	a.call(ctx, "/avb.v1.UserService/UpdateMe", `{"preferences":{"theme":"dark"}}`, bearer(bobTok)...)
	a.call(ctx, "/avb.v1.ProjectService/AddProjectMember", `{"projectId":"`+proj+`","userId":"`+bob+`","role":"PROJECT_ROLE_DEVELOPER"}`, admin...)
	a.call(ctx, "/avb.v1.ProjectService/RemoveProjectMember", `{"projectId":"`+proj+`","userId":"`+bob+`","role":"PROJECT_ROLE_DEVELOPER"}`, admin...)
	a.call(ctx, "/avb.v1.RoleService/GrantRole", `{"userId":"`+bob+`","role":"TENANT_ROLE_VIEWER"}`, admin...)
	a.call(ctx, "/avb.v1.RoleService/RevokeRole", `{"userId":"`+bob+`","role":"TENANT_ROLE_VIEWER"}`, admin...)
	a.call(ctx, "/avb.v1.TenantService/UpdateTenantSettings", `{"settings":{"branding":{"displayName":"Audited Inc"}},"updateMask":"branding"}`, admin...)
	a.call(ctx, "/avb.v1.NotificationService/MarkNotificationsRead", `{"all":true}`, admin...)
	a.secret = append(a.secret, "sk-audited-tenant-own-key", "sk-platform-audited")
	a.call(ctx, "/avb.v1.TenantService/SetTenantSecret", `{"name":"openai_api_key","secret":"sk-audited-tenant-own-key"}`, admin...)
	a.call(ctx, "/avb.v1.TenantService/DeleteTenantSecret", `{"name":"openai_api_key"}`, admin...)
	// A webhook signing secret shown once: never in the log either.
	a.secret = append(a.secret, str(a.call(ctx, "/avb.v1.TenantService/RotateTenantSecret", `{"name":"webhook_signing_secret"}`, admin...), "value"))

	sess := str(a.call(ctx, "/avb.v1.SessionService/CreateSession", `{"projectId":"`+proj+`","config":{"model":"scripted"}}`, bearer(rt)...), "session", "id")
	tok := a.call(ctx, "/avb.v1.VoiceService/CreateClientToken", `{"sessionId":"`+sess+`","ttlSeconds":60}`, bearer(rt)...)
	a.secret = append(a.secret, str(tok, "token"))
	a.call(ctx, "/avb.v1.SessionService/TerminateSession", `{"sessionId":"`+sess+`"}`, admin...)

	// A live call over Converse records one api_call entry.
	before := len(a.entries(ctx))
	client := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(rt))
	if reply, reason, _ := askOnce(t, client, ""); reply == "" {
		t.Fatalf("the call: %s", reason)
	}
	if got := a.entries(ctx); len(got) != before+1 || got[len(got)-1].Action != "api_call" || got[len(got)-1].ActorType != "api_key" {
		t.Fatalf("a call recorded %d entries: %+v", len(got)-before, got[len(got)-1])
	}
	a.seen["/avb.v1.VoiceService/Converse"]++
	// The browser path: ConverseEvents on a session made for it.
	sess2 := str(wantOK(t, p.call("/avb.v1.SessionService/CreateSession", `{"config":{"model":"scripted"}}`, bearer(rt)...)), "session", "id")
	before = len(a.entries(ctx))
	browser := avbv1connect.NewVoiceServiceClient(http.DefaultClient, p.base, withKey(rt))
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	events, err := browser.ConverseEvents(sctx, connect.NewRequest(&avbv1.ConverseEventsRequest{Start: &avbv1.SessionStart{SessionId: sess2}}))
	if err != nil || !events.Receive() {
		t.Fatalf("ConverseEvents: %v %v", err, events.Err())
	}
	cancel()
	_ = events.Close()
	waitFor(t, 5*time.Second, func() bool { return len(a.entries(ctx)) == before+1 })
	a.seen["/avb.v1.VoiceService/ConverseEvents"]++

	a.call(ctx, "/avb.v1.UserService/DeactivateUser", `{"userId":"`+bob+`"}`, admin...)
	a.call(ctx, "/avb.v1.ApiKeyService/RevokeApiKey", `{"apiKeyId":"`+keyID+`"}`, admin...)
	// Phone numbers and trunks; a trunk's password (and its digest) never
	// reach the log.
	trunk := str(a.call(ctx, "/avb.v1.SipTrunkService/CreateSipTrunk", `{"sipTrunk":{"name":"carrier","username":"t1","password":"trunk-pass-1"}}`, admin...), "sipTrunk", "id")
	a.secret = append(a.secret, "trunk-pass-1", telephony.HA1("t1", server.SIPRealm, "trunk-pass-1"))
	a.call(ctx, "/avb.v1.SipTrunkService/UpdateSipTrunk", `{"sipTrunkId":"`+trunk+`","sipTrunk":{"allowedSources":["203.0.113.7"]},"updateMask":"allowedSources"}`, admin...)
	number := str(a.call(ctx, "/avb.v1.PhoneNumberService/CreatePhoneNumber", `{"phoneNumber":{"name":"+15550123","projectId":"`+proj+`","personaId":"`+persona+`"}}`, admin...), "phoneNumber", "id")
	a.call(ctx, "/avb.v1.PhoneNumberService/UpdatePhoneNumber", `{"phoneNumberId":"`+number+`","phoneNumber":{"description":"front desk"},"updateMask":"description"}`, admin...)
	a.call(ctx, "/avb.v1.PhoneNumberService/DeletePhoneNumber", `{"phoneNumberId":"`+number+`"}`, admin...)
	// A call placed to a trunk that never answers (it rings out in 1 s).
	out := str(a.call(ctx, "/avb.v1.SipTrunkService/CreateSipTrunk", `{"sipTrunk":{"name":"out","outboundAddress":"127.0.0.1:9"}}`, admin...), "sipTrunk", "id")
	a.call(ctx, "/avb.v1.CallService/Dial", `{"sipTrunkId":"`+out+`","to":"+15550142","ringTimeoutSeconds":1}`, admin...)
	a.call(ctx, "/avb.v1.SipTrunkService/DeleteSipTrunk", `{"sipTrunkId":"`+trunk+`"}`, admin...)
	a.call(ctx, "/avb.v1.PersonaService/DeletePersona", `{"personaId":"`+persona+`"}`, admin...)
	a.call(ctx, "/avb.v1.VoiceConfigService/DeleteVoiceConfig", `{"voiceConfigId":"`+vc+`"}`, admin...)
	a.call(ctx, "/avb.v1.ProjectService/DeleteProject", `{"projectId":"`+proj+`"}`, admin...)

	// The platform's own RPCs record in the log of the tenant they act on.
	sysTok := p.token("root", "", "sysadmin")
	sys := bearer(sysTok)
	a.secret = append(a.secret, sysTok)
	created := wantOK(t, p.call("/avb.v1.AdminService/CreateTenant", `{"name":"Acme","slug":"acme-audited","tier":"TENANT_TIER_STARTER"}`, sys...))
	acme := str(created, "tenant", "id")
	actx := tenancy.With(context.Background(), mustUUID(t, acme))
	if got := a.entries(actx); len(got) != 1 || got[0].Action != "create" || got[0].ResourceID != acme {
		t.Fatalf("tenant creation recorded %+v", got)
	}
	a.seen["/avb.v1.AdminService/CreateTenant"]++
	a.call(actx, "/avb.v1.AdminService/SuspendTenant", `{"tenantId":"`+acme+`","reason":"unpaid"}`, sys...)
	a.call(actx, "/avb.v1.AdminService/ActivateTenant", `{"tenantId":"`+acme+`"}`, sys...)
	a.call(actx, "/avb.v1.AdminService/ChangeTenantTier", `{"tenantId":"`+acme+`","tier":"TENANT_TIER_PRO"}`, sys...)
	a.call(actx, "/avb.v1.AdminService/DeleteTenant", `{"tenantId":"`+acme+`"}`, sys...)

	for md := range policy.Methods() {
		proc := procedureOf(md)
		if policy.AuditOf(proc).Action != "" && a.seen[proc] == 0 {
			t.Errorf("%s was not exercised", proc)
		}
	}
	// Nothing secret reached the log, and the chains verify.
	for _, c := range []context.Context{ctx, actx} {
		for _, e := range a.entries(c) {
			raw, _ := json.Marshal(e)
			for _, s := range a.secret {
				if s != "" && strings.Contains(string(raw), s) {
					t.Fatalf("entry %s (%s %s) holds a secret: %s", e.ID, e.Action, e.ResourceType, raw)
				}
			}
			for _, field := range []string{"keyHash", "key_hash", "hashedKey"} {
				if strings.Contains(string(e.OldValues)+string(e.NewValues), field) {
					t.Fatalf("entry %s holds a %s", e.ID, field)
				}
			}
		}
		if v, err := p.app.DB().AuditLog().Verify(c, 5); err != nil || !v.Intact() {
			t.Fatalf("chain: %+v %v", v, err)
		}
	}
	t.Logf("%d RPCs exercised, %d entries", len(a.seen), len(a.entries(ctx)))
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !ok(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in " + d.String())
		}
	}
}

func mustUUID(t *testing.T, s string) uuid.UUID {
	t.Helper()
	id, err := uuid.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Property 16, as the application's role (avb_app): across random
// sequences of API calls (some of which fail and roll back) and direct SQL
// attempts on the log, no UPDATE, DELETE, TRUNCATE or forged INSERT ever
// succeeds, and the log holds exactly one entry per mutating call that
// committed, no more and no fewer; the chain verifies throughout.
func TestPropertyAuditTrailIsCompleteAndAppendOnly(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("prop16", store.TierEnterprise)
	ctx := tenancy.With(context.Background(), ten.ID)
	admin := bearer(p.token("ada", ten.ID.String(), "admin"))
	wantOK(t, p.call("/avb.v1.UserService/GetMe", `{}`, admin...)) // the first request records the user
	db := p.app.DB()
	count := func() int64 {
		v, err := db.AuditLog().Verify(ctx, 3)
		if err != nil || !v.Intact() {
			t.Fatalf("chain: %+v %v", v, err)
		}
		return v.Entries
	}
	committed := count()
	var projects []string
	tamper := []string{
		"UPDATE audit_logs SET action = 'forged'",
		"DELETE FROM audit_logs",
		"TRUNCATE audit_logs",
		"TRUNCATE audit_logs_default",
		"INSERT INTO audit_logs (id, tenant_id, seq, created_at, actor_type, action, hash) VALUES (gen_random_uuid(), current_tenant_id(), 999, now(), 'user', 'forged', '\\x00')",
		"UPDATE audit_chains SET seq = 0",
		"DELETE FROM audit_chains",
		"ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_immutable",
		"DROP TABLE audit_logs_default",
		"SELECT audit_chain_insert(current_tenant_id(), now(), 'user', NULL, '', 'forged', '', '', '', '', '', '', '{}', '{}')",
	}
	rapid.Check(t, func(rt *rapid.T) {
		for range rapid.IntRange(1, 12).Draw(rt, "steps") {
			var r result
			switch op := rapid.IntRange(0, 5).Draw(rt, "op"); op {
			case 0: // create; a name already taken fails
				name := rapid.SampledFrom([]string{"a", "b", "c", "d"}).Draw(rt, "name")
				r = p.call("/avb.v1.ProjectService/CreateProject", `{"name":"`+name+`"}`, admin...)
				if r.status == http.StatusOK {
					projects = append(projects, str(r.body, "project", "id"))
				}
			case 1, 2: // update or delete a project that may be gone
				id := "00000000-0000-4000-8000-000000000000"
				if len(projects) > 0 && rapid.Bool().Draw(rt, "known") {
					id = projects[rapid.IntRange(0, len(projects)-1).Draw(rt, "project")]
				}
				if op == 1 {
					r = p.call("/avb.v1.ProjectService/UpdateProject", `{"projectId":"`+id+`","project":{"description":"`+uuid.NewString()+`"},"updateMask":"description"}`, admin...)
				} else {
					r = p.call("/avb.v1.ProjectService/DeleteProject", `{"projectId":"`+id+`"}`, admin...)
				}
			case 3: // an invalid request fails before any change
				r = p.call("/avb.v1.ProjectService/CreateProject", `{"name":""}`, admin...)
			case 4: // settings
				r = p.call("/avb.v1.TenantService/UpdateTenantSettings", `{"settings":{"branding":{"displayName":"`+uuid.NewString()[:8]+`"}},"updateMask":"branding"}`, admin...)
			case 5: // direct SQL, as the application's role, with the tenant set
				stmt := rapid.SampledFrom(tamper).Draw(rt, "sql")
				tx, err := db.Pool.Begin(ctx)
				if err != nil {
					rt.Fatal(err)
				}
				_, _ = tx.Exec(ctx, "SELECT set_config('app.tenant_id', $1, true)", ten.ID.String())
				_, err = tx.Exec(ctx, stmt)
				if err == nil {
					err = tx.Commit(ctx)
				}
				_ = tx.Rollback(ctx)
				if err == nil {
					rt.Fatalf("%s succeeded as avb_app", stmt)
				}
				continue
			}
			if r.status == http.StatusOK {
				committed++
			}
		}
		if got := count(); got != committed {
			rt.Fatalf("%d entries for %d committed mutating calls", got, committed)
		}
	})
}

// A user's first request with a new session of the identity provider
// records login; the provider's back-channel logout records logout and
// from then on the session's tokens are refused on every instance,
// including a session avb never saw. The development issuer sends the
// logout as Keycloak does.
func TestLoginAndBackchannelLogoutAcrossInstances(t *testing.T) {
	t.Parallel()
	issuer, a, b := twoInstances(t)
	ten := a.tenant("logins", store.TierPro)
	ctx := tenancy.With(context.Background(), ten.ID)
	tok := func(sid string) []string {
		s, err := issuer.Issue(authn.Token{Subject: "ada", Email: "ada@example.com", TenantID: ten.ID.String(),
			Roles: []string{"admin"}, Audience: "avb-api", SessionID: sid})
		if err != nil {
			t.Fatal(err)
		}
		return bearer(s)
	}
	logins := func(action string) []store.AuditEntry {
		got, _, err := a.app.DB().AuditLog().List(ctx, store.AuditFilter{Action: action}, 100, "")
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	for !a.app.BusHealthy() || !b.app.BusHealthy() {
		time.Sleep(10 * time.Millisecond)
	}
	// Session s1: a token, a refreshed token, two instances: one login.
	for _, p := range []*platform{a, b, a} {
		wantOK(t, p.call("/avb.v1.UserService/GetMe", `{}`, tok("s1")...))
	}
	wantOK(t, b.call("/avb.v1.UserService/GetMe", `{}`, tok("s2")...))
	got := logins("login")
	if len(got) != 2 || got[1].ActorEmail != "ada@example.com" || got[1].ActorType != "user" || string(got[1].NewValues) != `{"session": "s1"}` {
		t.Fatalf("logins %+v", got)
	}
	// Logout tokens that are not valid are refused, and end nothing.
	bad, err := issuer.Issue(authn.Token{Subject: "ada", Audience: "avb-api", SessionID: "s1"}) // an access token, no logout event
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range []string{"", "logout_token=garbage", "logout_token=" + bad} {
		res, err := http.Post(a.base+authn.BackchannelLogoutPath, "application/x-www-form-urlencoded", strings.NewReader(form))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest {
			t.Fatalf("logout with %.30q: %d", form, res.StatusCode)
		}
	}
	wantOK(t, b.call("/avb.v1.UserService/GetMe", `{}`, tok("s1")...))

	// The provider ends s1 (posting to instance a): b refuses it too, at once.
	if err := issuer.SendLogout(context.Background(), a.base+authn.BackchannelLogoutPath, "s1", "", "avb-api"); err != nil {
		t.Fatal(err)
	}
	ended := time.Now()
	for _, p := range []*platform{a, b} {
		for {
			r := p.call("/avb.v1.UserService/GetMe", `{}`, tok("s1")...)
			if r.status == http.StatusUnauthorized && r.reason == "session_logged_out" {
				break
			}
			if time.Since(ended) > time.Second {
				t.Fatalf("%s still answers %d %s for a logged-out session", p.base, r.status, r.reason)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Logf("logout reached both instances in %s", time.Since(ended))
	wantOK(t, a.call("/avb.v1.UserService/GetMe", `{}`, tok("s2")...))
	if out := logins("logout"); len(out) != 1 || out[0].ActorType != "user" || *out[0].ActorID != *got[1].ActorID {
		t.Fatalf("logouts %+v", out)
	}
	// A session ended before avb saw it never logs in.
	if err := issuer.SendLogout(context.Background(), b.base+authn.BackchannelLogoutPath, "s3", "", "avb-api"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, a.call("/avb.v1.UserService/GetMe", `{}`, tok("s3")...), 401, "unauthenticated", "session_logged_out")
	// The development issuer's logout endpoint sends the back-channel logout.
	issuer.BackchannelLogoutURL = b.base + authn.BackchannelLogoutPath
	res, err := http.PostForm(issuer.Issuer()+"/protocol/openid-connect/logout", url.Values{"sid": {"s2"}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("dev logout: %d", res.StatusCode)
	}
	wantErr(t, b.call("/avb.v1.UserService/GetMe", `{}`, tok("s2")...), 401, "unauthenticated", "session_logged_out")
	if n := len(logins("login")); n != 2 {
		t.Fatalf("%d logins", n)
	}
	if v, err := a.app.DB().AuditLog().Verify(ctx, 3); err != nil || !v.Intact() {
		t.Fatalf("chain %+v %v", v, err)
	}
}
