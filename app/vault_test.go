package app_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/agentvoicebox/avb/app"
	"github.com/agentvoicebox/avb/authn"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/platform/secret"
	"github.com/agentvoicebox/avb/platform/vault"
	"github.com/agentvoicebox/avb/store"
)

// vaultPlatform starts avb with its secrets and database credentials from
// the real Vault, under deploy/vault/avb.hcl, logging at debug to logs.
func vaultPlatform(t *testing.T, o testenv.VaultOptions, extra map[string]string, logs *testenv.LogBuffer) (*platform, *testenv.VaultSetup) {
	t.Helper()
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	o.Owner = owner
	v := testenv.VaultAvb(t, o)
	env := maps.Clone(v.Env)
	env["AVB_VAULT_SECRETS_TTL"] = "1s"
	env["AVB_VAULT_TIMEOUT"] = "2s"
	maps.Copy(env, extra)
	cfg := identityConfig(t, owner, issuer.Issuer(), env)
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return startPlatformLogging(t, cfg, issuer, owner, log), v
}

// avb runs with its secrets from Vault: the pool logs in as a leased user
// (row-level security still applies), a new version of the KV secret is
// used without a restart, and a rotated client-token secret still verifies
// the tokens minted before. Its AppRole token reads nothing beyond its
// policy, and no secret, token or lease id reaches the logs.
func TestSecretsFromVault(t *testing.T) {
	t.Parallel()
	const ct1, ct2 = "client-token-secret-from-vault-version-1", "client-token-secret-from-vault-version-2"
	var logs testenv.LogBuffer
	p, v := vaultPlatform(t, testenv.VaultOptions{Secrets: map[string]any{
		"client_token_secret": ct1, "openai_api_key": "sk-from-vault-1"}}, nil, &logs)

	var user string
	if err := p.app.DB().Pool.QueryRow(t.Context(), "SELECT current_user").Scan(&user); err != nil || !strings.HasPrefix(user, "v-") {
		t.Fatalf("the pool logs in as %q (%v), not a user leased from Vault", user, err)
	}
	if got := p.app.Secrets().OpenAI.Get(); got != "sk-from-vault-1" {
		t.Fatalf("provider key %q, not Vault's", got)
	}
	// Requests work as the leased user, within the tenant's rows.
	ten := p.tenant("vaulted", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))["secret"].(string)
	sessions := avbv1connect.NewSessionServiceClient(http.DefaultClient, p.base, withKey(key))
	created, err := sessions.CreateSession(t.Context(), connect.NewRequest(&avbv1.CreateSessionRequest{Config: callConfig}))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.GetSession().GetId()
	voiceClient := avbv1connect.NewVoiceServiceClient(http.DefaultClient, p.base, withKey(key))
	mint := func() string {
		t.Helper()
		m, err := voiceClient.CreateClientToken(t.Context(), connect.NewRequest(&avbv1.CreateClientTokenRequest{SessionId: id, TtlSeconds: 300}))
		if err != nil {
			t.Fatal(err)
		}
		return m.Msg.GetToken()
	}
	signedWith := func(tok, key string) bool {
		_, err := authn.NewClientTokens(secret.New(key)).Verify(tok)
		return err == nil
	}
	before := mint()
	if !signedWith(before, ct1) {
		t.Fatal("client tokens are not signed with the secret from Vault")
	}

	v.PutSecrets(t, map[string]any{"client_token_secret": ct2, "openai_api_key": "sk-from-vault-2"})
	deadline := time.Now().Add(10 * time.Second)
	for p.app.Secrets().OpenAI.Get() != "sk-from-vault-2" {
		if time.Now().After(deadline) {
			t.Fatal("the new version of the Vault secret was not picked up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	after := mint()
	if !signedWith(after, ct2) || signedWith(after, ct1) {
		t.Fatal("after the rotation, client tokens are not signed with the new secret")
	}
	// Both verify at the server: the old one for the rotation's grace.
	for _, tok := range []string{before, after} {
		if r := p.call("/avb.v1.VoiceService/SendAudio", `{"sessionId":"`+id+`","audio":""}`, bearer(tok)...); r.status == http.StatusUnauthorized {
			t.Fatalf("a client token was refused after the rotation: %s", r.raw)
		}
	}
	wantErr(t, p.call("/avb.v1.VoiceService/SendAudio", `{"sessionId":"`+id+`"}`, bearer(before[:len(before)-2]+"xx")...), 401, "unauthenticated", "invalid_token")

	// A version that fails validation is refused whole; the current stays.
	v.PutSecrets(t, map[string]any{"client_token_secret": "short", "openai_api_key": "sk-from-vault-3"})
	time.Sleep(2500 * time.Millisecond)
	if got := p.app.Secrets().OpenAI.Get(); got != "sk-from-vault-2" || p.app.Secrets().ClientToken.Get() != ct2 {
		t.Fatalf("an invalid version was applied: provider key %q", got)
	}

	// Least privilege: avb's AppRole token reads its own secret only.
	c, err := vault.Login(t.Context(), vault.Config{Address: v.Addr, RoleID: v.Env["AVB_VAULT_ROLE_ID"], SecretIDFile: v.Env["AVB_VAULT_SECRET_ID_FILE"], Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.KV("secret", time.Second).Read(t.Context(), v.KVPath); err != nil {
		t.Fatalf("avb cannot read its own secret: %v", err)
	}
	v.Admin.KVv2("secret").Put(t.Context(), "keycloak/admin", map[string]any{"password": "kc"})
	for _, path := range []string{"keycloak/admin", "avb-other/platform"} {
		_, _, err := c.KV("secret", time.Second).Read(t.Context(), path)
		var re *vaultapi.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusForbidden {
			t.Fatalf("avb's token reading secret/%s: %v, want 403", path, err)
		}
	}

	// Nothing secret in the logs: the secrets, the AppRole secret id, the
	// token, the leased password and the lease ids.
	sid, _ := os.ReadFile(v.Env["AVB_VAULT_SECRET_ID_FILE"])
	_, password := p.app.Secrets().Database.Current()
	never := []string{ct1, ct2, "sk-from-vault-1", "sk-from-vault-2", strings.TrimSpace(string(sid)), c.API().Token(), password}
	leases, err := v.Admin.Logical().ListWithContext(t.Context(), "sys/leases/lookup/database/creds/"+v.DBRole)
	if err != nil || leases == nil {
		t.Fatalf("list the leases: %v", err)
	}
	for _, k := range leases.Data["keys"].([]any) {
		never = append(never, k.(string))
	}
	p.stop()
	out := logs.String()
	if !strings.Contains(out, "secrets refreshed from Vault") {
		t.Fatalf("the logs do not show the refresh:\n%s", out)
	}
	for _, s := range never {
		if s != "" && strings.Contains(out, s) {
			t.Fatalf("a secret reached the logs: %.6s…", s)
		}
	}
}

// The database credentials rotate under load without failing a request:
// leases of 4 s (at most 8 s) are renewed, then replaced; the pool moves to
// each new user while requests keep coming.
func TestDatabaseCredentialsRotateUnderLoad(t *testing.T) {
	t.Parallel()
	var logs testenv.LogBuffer
	p, _ := vaultPlatform(t, testenv.VaultOptions{LeaseTTL: 4 * time.Second, LeaseMaxTTL: 8 * time.Second,
		Secrets: map[string]any{"openai_api_key": "sk"}}, nil, &logs)
	ten := p.tenant("rotating", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"load","scopes":["API_KEY_SCOPE_ADMIN"]}`, bearer(admin)...))["secret"].(string)
	db := p.app.Secrets().Database
	first := db.Rotations()
	users := map[string]bool{}
	var requests, failures atomic.Int64
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && db.Rotations() < first+2 {
				r := p.call("/avb.v1.ProjectService/ListProjects", "{}", "X-API-Key", key)
				requests.Add(1)
				if r.status != http.StatusOK {
					failures.Add(1)
					t.Errorf("request failed during rotation: %d %s", r.status, r.raw)
				}
			}
		}()
	}
	for ctx.Err() == nil && db.Rotations() < first+2 {
		var u string
		if err := p.app.DB().Pool.QueryRow(ctx, "SELECT current_user").Scan(&u); err != nil {
			t.Errorf("pool query during rotation: %v", err)
		}
		users[u] = true
		time.Sleep(200 * time.Millisecond)
	}
	wg.Wait()
	if db.Rotations() < first+2 {
		t.Fatalf("%d rotations in 40 s", db.Rotations()-first)
	}
	t.Logf("%d requests across %d rotations (%d users seen), %d failed", requests.Load(), db.Rotations()-first, len(users), failures.Load())
	if failures.Load() > 0 || len(users) < 2 {
		t.Fatalf("%d failures, users %v", failures.Load(), users)
	}
	if !strings.Contains(logs.String(), "database credentials rotated") {
		t.Fatal("the rotation is not logged")
	}
}

// With Vault configured, avb does not start without it: one clear error,
// within the Vault deadline, whether Vault refuses connections, hangs,
// refuses the login or lacks avb's secret.
func TestStartFailsWithoutVault(t *testing.T) {
	t.Parallel()
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	v := testenv.VaultAvb(t, testenv.VaultOptions{Secrets: map[string]any{"openai_api_key": "sk"}})
	hung := testenv.FaultyLink(t, "vault-hung", strings.TrimPrefix(v.Addr, "http://"))
	hung.Inject(testenv.Blackhole, 0)
	badSecret := t.TempDir() + "/secret-id"
	if err := os.WriteFile(badSecret, []byte("not-the-secret-id"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"refused", map[string]string{"AVB_VAULT_ADDR": "http://127.0.0.1:1"}, "connection refused"},
		{"hung", map[string]string{"AVB_VAULT_ADDR": "http://" + hung.Addr()}, "deadline"},
		{"login refused", map[string]string{"AVB_VAULT_SECRET_ID_FILE": badSecret}, "AppRole login"},
		{"no secret", map[string]string{"AVB_VAULT_KV_PATH": "avb-missing/platform"}, "avb-missing/platform"},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := maps.Clone(v.Env)
			env["AVB_VAULT_TIMEOUT"] = "1s"
			env["AVB_PROFILE"] = "test"
			maps.Copy(env, c.env)
			cfg := identityConfig(t, owner, issuer.Issuer(), env)
			start := time.Now()
			a, err := app.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
			took := time.Since(start)
			if err == nil {
				a.Close()
				t.Fatal("avb started without Vault")
			}
			if !strings.Contains(err.Error(), "cannot start without Vault") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say what is wrong (%s)", err, c.want)
			}
			if took > 5*time.Second {
				t.Fatalf("took %s to give up", took)
			}
		})
	}
}

// Vault going away mid-run does not stop avb: the secrets it read keep
// serving, readiness says they may be stale, and it recovers when Vault is
// back.
func TestVaultOutageMidRun(t *testing.T) {
	t.Parallel()
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	v := testenv.VaultAvb(t, testenv.VaultOptions{Owner: owner, Secrets: map[string]any{"openai_api_key": "sk-1"}})
	link := testenv.FaultyLink(t, "vault", strings.TrimPrefix(v.Addr, "http://"))
	env := maps.Clone(v.Env)
	env["AVB_VAULT_ADDR"] = "http://" + link.Addr()
	env["AVB_VAULT_SECRETS_TTL"] = "1s"
	env["AVB_VAULT_TIMEOUT"] = "1s"
	p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), env), issuer, owner)
	ten := p.tenant("outage", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	// (Temporal is not running for this test: readiness is what it is
	// without Vault's outage, and must stay so.)
	readyBefore, _ := p.readiness("postgres")
	for _, fault := range []testenv.Fault{testenv.Refused, testenv.Blackhole} {
		link.Inject(fault, 0)
		waitDegraded(t, p, true)
		wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"during `+string(fault)+`","scopes":["API_KEY_SCOPE_ADMIN"]}`, bearer(admin)...))
		if code, pg := p.readiness("postgres"); code != readyBefore || pg != "up" {
			t.Fatalf("a Vault outage changed readiness: %d (was %d), postgres %s", code, readyBefore, pg)
		}
		link.Heal()
		waitDegraded(t, p, false)
	}
	v.PutSecrets(t, map[string]any{"openai_api_key": "sk-2"})
	deadline := time.Now().Add(10 * time.Second)
	for p.app.Secrets().OpenAI.Get() != "sk-2" {
		if time.Now().After(deadline) {
			t.Fatal("secrets not refreshed after Vault came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitDegraded(t *testing.T, p *platform, want bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for strings.Contains(p.readinessBody(), `"secrets"`) != want {
		if time.Now().After(deadline) {
			t.Fatalf("readiness: secrets degraded should be %v: %s", want, p.readinessBody())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// With a PKI role, avb serves HTTPS with a certificate Vault issued, and
// renews it before it expires: new connections get the new one, and a
// connection open across the renewal keeps working.
func TestTLSCertificateFromVaultRotates(t *testing.T) {
	t.Parallel()
	var logs testenv.LogBuffer
	p, v := vaultPlatform(t, testenv.VaultOptions{CertTTL: 6 * time.Second, Secrets: map[string]any{"openai_api_key": "sk"}},
		map[string]string{"AVB_HTTPS_REDIRECT": "false"}, &logs)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(v.CA)) {
		t.Fatal("no CA from Vault")
	}
	base := strings.Replace(p.base, "http://", "https://", 1)
	held := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	serial := func(c *http.Client) (string, bool) {
		t.Helper()
		var reused bool
		ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/health/", nil)
		res, err := c.Do(req)
		if err != nil {
			t.Fatalf("https: %v", err)
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK || res.TLS == nil || res.ProtoMajor != 2 {
			t.Fatalf("got %d over %s, TLS %v", res.StatusCode, res.Proto, res.TLS != nil)
		}
		return res.TLS.PeerCertificates[0].SerialNumber.Text(16), reused
	}
	first, _ := serial(held)
	certs := p.app.Secrets().Certificates
	deadline := time.Now().Add(20 * time.Second)
	for certs.Issued() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the certificate was not renewed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The held connection still serves, with the certificate it began with.
	if s, reused := serial(held); !reused || s != first {
		t.Fatalf("the open connection was dropped across the renewal (reused %v, serial %s then %s)", reused, first, s)
	}
	fresh := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	if s, _ := serial(fresh); s == first || s != certs.Current().SerialNumber.Text(16) {
		t.Fatalf("a new connection got serial %s, the first was %s", s, first)
	}
	if !strings.Contains(logs.String(), "TLS certificate renewed") {
		t.Fatal("the renewal is not logged")
	}
}

// avb worker runs under deploy/vault/worker.hcl: its secrets and database
// credentials, and nothing it does not need (no TLS certificate).
func TestWorkerSecretsUnderItsPolicy(t *testing.T) {
	t.Parallel()
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	v := testenv.VaultAvb(t, testenv.VaultOptions{Policy: "worker.hcl", Owner: owner, CertTTL: time.Hour,
		Secrets: map[string]any{"lago_api_key": "lago-from-vault"}})
	cfg := identityConfig(t, owner, issuer.Issuer(), v.Env)
	if err := app.Migrate(t.Context(), cfg.Database, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, err := app.OpenSecrets(t.Context(), cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("the worker's policy let it issue a TLS certificate: %v", err)
	}
	cfg = identityConfig(t, owner, issuer.Issuer(), maps.Collect(func(yield func(string, string) bool) {
		for k, val := range v.Env {
			if !strings.HasPrefix(k, "AVB_VAULT_PKI_") && !yield(k, val) {
				return
			}
		}
	}))
	s, err := app.OpenSecrets(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if s.LagoAPI.Get() != "lago-from-vault" {
		t.Fatalf("lago key %q", s.LagoAPI.Get())
	}
	db, err := store.Open(t.Context(), cfg.Database, s.StoreOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.CheckRole(t.Context()); err != nil {
		t.Fatalf("the leased user: %v", err)
	}
}

// keyRecorder is an OpenAI-compatible model that answers every prompt with
// one sentence and remembers the API keys it was called with.
func keyRecorder(t *testing.T) (url string, keys func() []string) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"content\":\"Sure.\"}}]}\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v1", func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// A tenant's own OpenAI key is stored only as a Transit ciphertext, serves
// the tenant's calls (another tenant's calls keep the platform's key),
// survives a Transit key rotation and rewrap while serving, and while
// Vault does not answer only the calls that need it fail, with unavailable.
func TestTenantSecretsEncryptedByTransit(t *testing.T) {
	t.Parallel()
	model, keys := keyRecorder(t)
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	v := testenv.VaultAvb(t, testenv.VaultOptions{Transit: true, Secrets: map[string]any{"openai_api_key": "sk-platform"}})
	link := testenv.FaultyLink(t, "vault-transit", strings.TrimPrefix(v.Addr, "http://"))
	env := maps.Clone(v.Env)
	maps.Copy(env, map[string]string{"AVB_VAULT_ADDR": "http://" + link.Addr(), "AVB_VAULT_TIMEOUT": "1s",
		"AVB_VAULT_TRANSIT_REWRAP_EVERY": "1s", "AVB_VAULT_TRANSIT_CACHE_TTL": "0s",
		"AVB_OPENAI_BASE_URL": model, "AVB_OPENAI_MODEL": "m"})
	p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), env), issuer, owner)
	const own = "sk-tenant-own-key-4242"
	a, b := p.tenant("brings-key", store.TierPro), p.tenant("platform-key", store.TierPro)
	admin := p.token("ada", a.ID.String(), "admin")
	set := wantOK(t, p.call("/avb.v1.TenantService/SetTenantSecret", `{"name":"openai_api_key","secret":"`+own+`"}`, bearer(admin)...))
	if strings.Contains(fmt.Sprint(set), own) {
		t.Fatalf("the answer carries the secret: %v", set)
	}
	listed := wantOK(t, p.call("/avb.v1.TenantService/ListTenantSecrets", `{}`, bearer(admin)...))
	if fmt.Sprint(listed["secrets"]) == "" || strings.Contains(fmt.Sprint(listed), own) || !strings.Contains(fmt.Sprint(listed), "openai_api_key") {
		t.Fatalf("list: %v", listed)
	}
	odb := ownerDB(t, owner)
	var cipher string
	if err := odb.QueryRow(t.Context(), "SELECT ciphertext FROM tenant_secrets WHERE tenant_id = $1", a.ID).Scan(&cipher); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cipher, "vault:v1:") || strings.Contains(cipher, own) {
		t.Fatalf("stored %q", cipher)
	}
	var leaks int
	if err := odb.QueryRow(t.Context(), "SELECT count(*) FROM audit_logs WHERE new_values::text LIKE '%'||$1||'%' OR old_values::text LIKE '%'||$1||'%'", own).Scan(&leaks); err != nil || leaks != 0 {
		t.Fatalf("the audit log holds the secret: %d %v", leaks, err)
	}

	keyA, _ := p.realtimeKey(a)
	keyB := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_REALTIME"]}`,
		bearer(p.token("bob", b.ID.String(), "admin"))...))["secret"].(string)
	turn := func(key string) error {
		client := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		stream := client.Converse(ctx)
		cfg := &avbv1.SessionConfig{PhraseHints: callConfig.PhraseHints, Model: "openai"}
		if err := stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Start{Start: &avbv1.SessionStart{Config: cfg}}}); err != nil {
			return err
		}
		go askIn(t, stream, 20*time.Millisecond)
		defer func() { _ = stream.CloseRequest() }()
		for {
			msg, err := stream.Receive()
			if err != nil {
				return err
			}
			switch ev := msg.GetEvent().GetEvent().(type) {
			case *avbv1.VoiceEvent_ResponseDone:
				return nil
			case *avbv1.VoiceEvent_Error:
				return errors.New(ev.Error.GetReason())
			}
		}
	}
	lastKey := func() string { k := keys(); return k[len(k)-1] }
	if err := turn(keyA); err != nil || lastKey() != own {
		t.Fatalf("tenant with its own key: %v, model called with %q", err, lastKey())
	}
	if err := turn(keyB); err != nil || lastKey() != "sk-platform" {
		t.Fatalf("tenant without: %v, model called with %q", err, lastKey())
	}

	// The key rotates; the rewrap moves the secret to v2 while calls go on.
	if _, err := v.Admin.Logical().WriteWithContext(t.Context(), "transit/keys/"+v.TransitKey+"/rotate", nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for !strings.HasPrefix(cipher, "vault:v2:") {
		if err := turn(keyA); err != nil || lastKey() != own {
			t.Fatalf("a call during the rewrap: %v, key %q", err, lastKey())
		}
		if time.Now().After(deadline) {
			t.Fatalf("not rewrapped: %q", cipher)
		}
		if err := odb.QueryRow(t.Context(), "SELECT ciphertext FROM tenant_secrets WHERE tenant_id = $1", a.ID).Scan(&cipher); err != nil {
			t.Fatal(err)
		}
	}
	if err := turn(keyA); err != nil || lastKey() != own {
		t.Fatalf("after the rewrap: %v, key %q", err, lastKey())
	}

	// Vault goes away: the tenant that needs its secret is told unavailable;
	// the other tenant's calls go on.
	// Refused, then hung (answering nothing): either way the answer comes
	// within the Vault deadline (1 s) plus the call's own set-up.
	for _, fault := range []testenv.Fault{testenv.Refused, testenv.Blackhole} {
		link.Inject(fault, 0)
		var ce *connect.Error
		start := time.Now()
		if err := turn(keyA); !errors.As(err, &ce) || ce.Code() != connect.CodeUnavailable {
			t.Fatalf("%s: a call needing the secret while Vault is away: %v", fault, err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("%s: the refusal took %s", fault, took)
		}
		if err := turn(keyB); err != nil {
			t.Fatalf("%s: a call needing no tenant secret while Vault is away: %v", fault, err)
		}
		wantErr(t, p.call("/avb.v1.TenantService/SetTenantSecret", `{"name":"openai_api_key","secret":"sk-another-key-000"}`, bearer(admin)...),
			503, "unavailable", "dependency_unavailable")
		link.Heal()
		if err := turn(keyA); err != nil || lastKey() != own {
			t.Fatalf("%s: after Vault came back: %v", fault, err)
		}
	}
	wantOK(t, p.call("/avb.v1.TenantService/DeleteTenantSecret", `{"name":"openai_api_key"}`, bearer(admin)...))
	if err := turn(keyA); err != nil || lastKey() != "sk-platform" {
		t.Fatalf("after the delete: %v, key %q", err, lastKey())
	}
}

// Without Transit, a tenant secret is refused, never stored in plain text.
func TestTenantSecretsNeedTransit(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("no-vault", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	wantErr(t, p.call("/avb.v1.TenantService/SetTenantSecret", `{"name":"openai_api_key","secret":"sk-tenant-key-1"}`, bearer(admin)...),
		400, "failed_precondition", "secret_store_not_configured")
	wantErr(t, p.call("/avb.v1.TenantService/SetTenantSecret", `{"name":"other","secret":"x"}`, bearer(admin)...),
		400, "invalid_argument", "validation_failed")
}

// BenchmarkOpenSecrets is what Vault adds to a start: the environment
// alone, against an AppRole login, the KV read, a database lease, the
// Transit key check and a TLS certificate.
func BenchmarkOpenSecrets(b *testing.B) {
	issuer := startIssuer(b)
	owner := testenv.Postgres(b)
	v := testenv.VaultAvb(b, testenv.VaultOptions{Owner: owner, Transit: true, CertTTL: time.Hour,
		Secrets: map[string]any{"openai_api_key": "sk"}})
	plain := identityConfig(b, owner, issuer.Issuer(), nil)
	vaulted := identityConfig(b, owner, issuer.Issuer(), v.Env)
	if err := app.Migrate(b.Context(), plain.Database, slog.New(slog.DiscardHandler)); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cfg  config.Config
	}{{"env", *plain}, {"vault", *vaulted}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				cfg := c.cfg
				if _, err := app.OpenSecrets(b.Context(), &cfg, slog.New(slog.DiscardHandler)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
