package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"

	"github.com/jackc/pgx/v5"

	"github.com/agentvoicebox/avb/app"
	"github.com/agentvoicebox/avb/authn"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/store"
)

// platform is one avb instance against real Postgres and Redis, with a dev
// OIDC issuer served over HTTP so go-oidc verifies tokens for real.
type platform struct {
	t      testing.TB
	base   string
	issuer *authn.DevIssuer
	app    *app.App
	owner  string // the schema owner's database URL
	cfg    *config.Config
	stop   func()
}

// startIssuer serves a dev issuer on its own port.
func startIssuer(t testing.TB) *authn.DevIssuer {
	t.Helper()
	mux := http.NewServeMux()
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	d, err := authn.NewDevIssuer(ts.URL + "/realms/avb")
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/", d.Handler())
	return d
}

func identityConfig(t testing.TB, owner, issuer string, extra map[string]string) *config.Config {
	t.Helper()
	env := identityEnv(t, owner, issuer, extra)
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// identityEnv is the environment of a test platform on the real components.
func identityEnv(t testing.TB, owner, issuer string, extra map[string]string) map[string]string {
	t.Helper()
	spiceAddr, spiceToken := testenv.SpiceDB(t)
	env := map[string]string{
		"AVB_SPICEDB_ENDPOINT":            spiceAddr,
		"AVB_SPICEDB_TOKEN":               spiceToken,
		"AVB_PROFILE":                     "test",
		"AVB_HTTP_ADDR":                   "127.0.0.1:0",
		"AVB_DATABASE_URL":                testenv.AppURL(owner),
		"AVB_DATABASE_MIGRATION_URL":      owner,
		"AVB_DATABASE_MIGRATE_ON_START":   "true",
		"AVB_REDIS_URL":                   testenv.RedisURL(t),
		"AVB_OIDC_ISSUER_URL":             issuer,
		"AVB_TENANT_BASE_DOMAIN":          "avb.test",
		"AVB_APIKEY_USAGE_FLUSH_INTERVAL": "200ms",
		// Tests share one Temporal server: each platform keeps to its queues.
		"AVB_TEMPORAL_QUEUE_PREFIX": fmt.Sprintf("t%d-%d-", os.Getpid(), queuePrefixes.Add(1)),
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

func newPlatform(t *testing.T) *platform {
	t.Helper()
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	return startPlatform(t, identityConfig(t, owner, issuer.Issuer(), nil), issuer, owner)
}

func startPlatform(t testing.TB, cfg *config.Config, issuer *authn.DevIssuer, owner string, opts ...app.Option) *platform {
	t.Helper()
	return startPlatformLogging(t, cfg, issuer, owner, slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelError})), opts...)
}

// startPlatformLogging is startPlatform with the server logging to log.
func startPlatformLogging(t testing.TB, cfg *config.Config, issuer *authn.DevIssuer, owner string, log *slog.Logger, opts ...app.Option) *platform {
	t.Helper()
	a, err := app.New(t.Context(), cfg, log, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, func(addr net.Addr) { addrs <- addr }) }()
	p := &platform{t: t, issuer: issuer, app: a, owner: owner, cfg: cfg}
	deadline := time.Now().Add(10 * time.Second)
	for !a.AuthzReady() || !a.BusHealthy() {
		if time.Now().After(deadline) {
			t.Fatal("authorization schema or invalidation bus not ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopped := false
	p.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
		a.Close()
	}
	t.Cleanup(p.stop)
	select {
	case addr := <-addrs:
		p.base = "http://" + addr.String()
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	return p
}

// tenant creates an active tenant, as AdminService.CreateTenant does.
func (p *platform) tenant(slug string, tier string) *store.Tenant {
	p.t.Helper()
	ten := &store.Tenant{Name: strings.ToUpper(slug), Slug: slug, Tier: tier}
	if err := p.app.DB().Tenants().Create(context.Background(), ten); err != nil {
		p.t.Fatal(err)
	}
	if err := p.app.Grants().TenantCreated(context.Background(), ten); err != nil {
		p.t.Fatal(err)
	}
	return ten
}

// token issues a token of the platform's issuer.
func (p *platform) token(sub, tenant string, roles ...string) string {
	p.t.Helper()
	tok, err := p.issuer.Issue(authn.Token{Subject: sub, Email: sub + "@example.com", TenantID: tenant, Roles: roles, Audience: "avb-api"})
	if err != nil {
		p.t.Fatal(err)
	}
	return tok
}

// result is a Connect JSON call's outcome.
type result struct {
	status int
	body   map[string]any
	raw    string
	code   string
	reason string
	header http.Header
}

// call posts a Connect JSON request, as curl would.
func (p *platform) call(procedure string, body string, headers ...string) result {
	p.t.Helper()
	return p.callWith(http.DefaultClient, procedure, body, headers...)
}

// callWith is call with a given HTTP client.
func (p *platform) callWith(client *http.Client, procedure string, body string, headers ...string) result {
	p.t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.base+procedure, strings.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := client.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := result{status: res.StatusCode, raw: string(raw), header: res.Header}
	_ = json.Unmarshal(raw, &r.body)
	if res.StatusCode != http.StatusOK {
		r.code, _ = r.body["code"].(string)
		r.reason = errorReason(r.body)
	}
	return r
}

// detail decodes the first error detail of type typ into msg.
func detail(body map[string]any, typ string, msg proto.Message) bool {
	details, _ := body["details"].([]any)
	for _, d := range details {
		m, _ := d.(map[string]any)
		if m["type"] != typ {
			continue
		}
		v, _ := m["value"].(string)
		b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(v, "="))
		if err == nil && proto.Unmarshal(b, msg) == nil {
			return true
		}
	}
	return false
}

// errorReason reads the ErrorInfo reason from a Connect JSON error body.
func errorReason(body map[string]any) string {
	var info errdetails.ErrorInfo
	if detail(body, "google.rpc.ErrorInfo", &info) {
		return info.GetReason()
	}
	return ""
}

// fieldViolations lists the fields named by a BadRequest detail.
func fieldViolations(body map[string]any) []string {
	var bad errdetails.BadRequest
	if !detail(body, "google.rpc.BadRequest", &bad) {
		return nil
	}
	var out []string
	for _, v := range bad.GetFieldViolations() {
		out = append(out, v.GetField())
	}
	return out
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

// ownerDB connects as the schema owner, to look at rows as they are stored.
func ownerDB(t *testing.T, owner string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), owner)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// queuePrefixes numbers test platforms' task queue prefixes.
var queuePrefixes atomic.Int64

var keyShape = regexp.MustCompile(`^avb_[A-Za-z0-9_-]{43}$`)

// testLog sends the server's error logs to the test's log.
type testLog struct{ t testing.TB }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}
