package app_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/agentvoicebox/avb/apierror"
	"github.com/agentvoicebox/avb/app"
	"github.com/agentvoicebox/avb/authn"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/policy"
	"github.com/agentvoicebox/avb/store"
)

// countingDecider allows everything and counts the checks it was asked.
type countingDecider struct{ n atomic.Int64 }

func (c *countingDecider) Allowed(context.Context, *authn.Principal, policy.Rule, string) (bool, error) {
	c.n.Add(1)
	return true, nil
}

var rateLimitPrefixes atomic.Int64

// limitEnv is the environment of a platform with small limits and Redis
// keys of its own.
func limitEnv(extra map[string]string) map[string]string {
	env := map[string]string{
		"AVB_RATE_LIMIT_DEFAULT":        "4",
		"AVB_RATE_LIMIT_API_KEY":        "6",
		"AVB_RATE_LIMIT_ADMIN":          "100000",
		"AVB_RATE_LIMIT_TENANT_CEILING": "free=8",
		"AVB_RATE_LIMIT_REDIS_PREFIX":   fmt.Sprintf("test:rl:%d:%d:", time.Now().UnixNano(), rateLimitPrefixes.Add(1)),
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// keyOfTier creates an API key of a rate-limit tier in ten.
func (p *platform) keyOfTier(ten *store.Tenant, tier string) string {
	p.t.Helper()
	admin := p.token("ada-"+ten.Slug, ten.ID.String(), "admin")
	r := p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"`+tier+`","scopes":["API_KEY_SCOPE_ADMIN"],"rateLimitTier":"RATE_LIMIT_TIER_`+tier+`"}`, bearer(admin)...)
	if r.status != http.StatusOK {
		p.t.Fatalf("create a %s key: %d %s", tier, r.status, r.raw)
	}
	return r.body["secret"].(string)
}

func headerInt(t *testing.T, h http.Header, name string) int {
	t.Helper()
	n, err := strconv.Atoi(h.Get(name))
	if err != nil {
		t.Fatalf("%s: %q", name, h.Get(name))
	}
	return n
}

// A key gets exactly its limit; every answer says where it stands; the
// request over the limit gets the 429 shape over Connect JSON (as curl sees
// it), gRPC and REST alike, and nothing runs behind the limit.
func TestRateLimitShapeOverEveryProtocol(t *testing.T) {
	t.Parallel()
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	decider := &countingDecider{}
	p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), limitEnv(nil)), issuer, owner, app.WithDecider(decider))
	ten := p.tenant("limited", store.TierPro)
	key := p.keyOfTier(ten, "STANDARD")

	admitted := transactions(p)
	for i := range 6 {
		r := p.call("/avb.v1.ProjectService/ListProjects", `{}`, "X-API-Key", key)
		if r.status != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, r.status, r.raw)
		}
		if l, rem := headerInt(t, r.header, "X-RateLimit-Limit"), headerInt(t, r.header, "X-RateLimit-Remaining"); l != 6 || rem != 5-i {
			t.Fatalf("request %d: limit %d remaining %d", i, l, rem)
		}
		if reset := headerInt(t, r.header, "X-RateLimit-Reset"); reset < 1 || reset > 60 {
			t.Fatalf("reset %d", reset)
		}
	}
	checks, begins := decider.n.Load(), transactions(p)
	if begins < admitted+6 {
		t.Fatalf("6 admitted reads began %d transactions", begins-admitted)
	}
	r := p.call("/avb.v1.ProjectService/ListProjects", `{}`, "X-API-Key", key)
	if r.status != http.StatusTooManyRequests || r.code != "resource_exhausted" || r.reason != "rate_limited" {
		t.Fatalf("over the limit: %d %s", r.status, r.raw)
	}
	var retry errdetails.RetryInfo
	if !detail(r.body, "google.rpc.RetryInfo", &retry) || retry.GetRetryDelay().AsDuration() <= 0 || retry.GetRetryDelay().AsDuration() > 10*time.Second {
		t.Fatalf("RetryInfo: %v in %s", retry.GetRetryDelay(), r.raw)
	}
	if ra := headerInt(t, r.header, "Retry-After"); ra < 1 || ra > 10 || headerInt(t, r.header, "X-RateLimit-Remaining") != 0 {
		t.Fatalf("headers of the 429: %v", r.header)
	}
	if decider.n.Load() != checks {
		t.Fatal("a refused request reached the authorization check")
	}

	// gRPC: the same code, reason and RetryInfo; the limits are metadata.
	grpc := avbv1connect.NewProjectServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))
	_, err := grpc.ListProjects(context.Background(), connect.NewRequest(&avbv1.ListProjectsRequest{}))
	var cerr *connect.Error
	if !errors.As(err, &cerr) || cerr.Code() != connect.CodeResourceExhausted || apierror.Reason(err) != "rate_limited" {
		t.Fatalf("gRPC over the limit: %v", err)
	}
	if cerr.Meta().Get("Retry-After") == "" || cerr.Meta().Get("X-RateLimit-Limit") != "6" {
		t.Fatalf("gRPC metadata: %v", cerr.Meta())
	}
	foundRetry := false
	for _, d := range cerr.Details() {
		if m, err := d.Value(); err == nil {
			if _, ok := m.(*errdetails.RetryInfo); ok {
				foundRetry = true
			}
		}
	}
	if !foundRetry {
		t.Fatal("gRPC error without RetryInfo")
	}

	// REST.
	rest := p.rest(http.MethodGet, "/api/v2/projects", "", "X-API-Key", key)
	if rest.status != http.StatusTooManyRequests || rest.header.Get("Retry-After") == "" || rest.header.Get("X-RateLimit-Limit") != "6" {
		t.Fatalf("REST over the limit: %d %v %s", rest.status, rest.header, rest.raw)
	}
	if decider.n.Load() != checks {
		t.Fatal("a refused request reached the authorization check")
	}
	if n := transactions(p); n != begins {
		t.Fatalf("refused requests began %d database transactions", n-begins)
	}
	if n := testutil.ToFloat64(p.app.Metrics.RateLimitRejections.WithLabelValues("api_key")); n != 3 {
		t.Fatalf("rate_limit_rejections_total{tier=api_key} = %v, want 3", n)
	}

	// Anonymous callers are limited by client IP (a public RPC).
	for i := range 5 {
		r := p.call("/avb.v1.SystemService/GetServerInfo", `{}`)
		want := http.StatusOK
		if i == 4 {
			want = http.StatusTooManyRequests
		}
		if r.status != want || r.header.Get("X-RateLimit-Limit") != "4" {
			t.Fatalf("anonymous request %d: %d %v", i, r.status, r.header)
		}
	}
}

// A key's rate-limit tier scales its limit, an unlimited key has none, and
// the tenant's tier caps them all.
func TestRateLimitTiersAndTenantCeiling(t *testing.T) {
	t.Parallel()
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), limitEnv(nil)), issuer, owner)
	pro := p.tenant("tierpro", store.TierPro)
	free := p.tenant("tierfree", store.TierFree)
	for _, c := range []struct {
		ten   *store.Tenant
		tier  string
		limit string
	}{
		{pro, "STANDARD", "6"},
		{pro, "ELEVATED", "30"},
		{pro, "UNLIMITED", ""},
		{free, "ELEVATED", "8"},
		{free, "UNLIMITED", "8"},
	} {
		key := p.keyOfTier(c.ten, c.tier)
		r := p.call("/avb.v1.ProjectService/ListProjects", `{}`, "X-API-Key", key)
		if r.status != http.StatusOK || r.header.Get("X-RateLimit-Limit") != c.limit {
			t.Errorf("%s key of a %s tenant: %d, limit %q, want %q", c.tier, c.ten.Tier, r.status, r.header.Get("X-RateLimit-Limit"), c.limit)
		}
	}
	// Users get the default limit, admins theirs.
	viewer := p.call("/avb.v1.ProjectService/ListProjects", `{}`, bearer(p.token("vic", pro.ID.String(), "viewer"))...)
	admin := p.call("/avb.v1.ProjectService/ListProjects", `{}`, bearer(p.token("ada", pro.ID.String(), "admin"))...)
	if viewer.header.Get("X-RateLimit-Limit") != "4" || admin.header.Get("X-RateLimit-Limit") != "100000" {
		t.Fatalf("viewer limit %q, admin limit %q", viewer.header.Get("X-RateLimit-Limit"), admin.header.Get("X-RateLimit-Limit"))
	}
}

// Two instances share one key's limit: the buckets are in Redis.
func TestRateLimitSharedByInstances(t *testing.T) {
	t.Parallel()
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	env := limitEnv(nil)
	a := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), env), issuer, owner, app.WithDecider(&countingDecider{}))
	env["AVB_DATABASE_MIGRATE_ON_START"] = "false"
	b := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), env), issuer, owner, app.WithDecider(&countingDecider{}))
	ten := a.tenant("shared", store.TierPro)
	key := a.keyOfTier(ten, "STANDARD")
	admitted := 0
	for i := range 12 {
		p := a
		if i%2 == 1 {
			p = b
		}
		if r := p.call("/avb.v1.ProjectService/ListProjects", `{}`, "X-API-Key", key); r.status == http.StatusOK {
			admitted++
		} else if r.reason != "rate_limited" {
			t.Fatalf("request %d: %d %s", i, r.status, r.raw)
		}
	}
	if admitted != 6 {
		t.Fatalf("two instances admitted %d requests of a key limited to 6", admitted)
	}
}

// With Redis refused or hung, no request is refused for it: each instance
// limits on its own with the same limits, says so in readiness and the
// metrics, and goes back to Redis when it returns.
func TestRateLimitRedisOutage(t *testing.T) {
	t.Parallel()
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	link := testenv.FaultyLink(t, "redis", hostOf(testenv.RedisURL(t)))
	env := limitEnv(map[string]string{"AVB_REDIS_URL": withHost(testenv.RedisURL(t), link.Addr()),
		"AVB_REDIS_COMMAND_TIMEOUT": "300ms", "AVB_REDIS_DIAL_TIMEOUT": "300ms", "AVB_BREAKER_OPEN_FOR": "1s"})
	p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), env), issuer, owner, app.WithDecider(&countingDecider{}))
	ten := p.tenant("outage", store.TierPro)
	for _, fault := range []testenv.Fault{testenv.Refused, testenv.Blackhole} {
		key := p.keyOfTier(ten, "STANDARD")
		if r := p.call("/avb.v1.ProjectService/ListProjects", `{}`, "X-API-Key", key); r.status != http.StatusOK {
			t.Fatalf("before the outage: %d %s", r.status, r.raw)
		}
		link.Inject(fault, 0)
		admitted := 0
		for i := range 8 {
			start := time.Now()
			r := p.call("/avb.v1.ProjectService/ListProjects", `{}`, "X-API-Key", key)
			if took := time.Since(start); took > 3*time.Second {
				t.Fatalf("%s: request %d took %v", fault, i, took)
			}
			switch {
			case r.status == http.StatusOK:
				admitted++
			case r.reason != "rate_limited":
				t.Fatalf("%s: request %d refused for the outage: %d %s", fault, i, r.status, r.raw)
			}
		}
		// The local bucket starts full: 6 (its own limit), not 5.
		if admitted != 6 {
			t.Errorf("%s: %d requests admitted of a key limited to 6", fault, admitted)
		}
		if testutil.ToFloat64(p.app.Metrics.RateLimitLocal) != 1 {
			t.Errorf("%s: rate_limit_local is not 1", fault)
		}
		if body := p.readinessBody(); !strings.Contains(body, `"rate_limits"`) {
			t.Errorf("%s: readiness does not say the limits are local: %s", fault, body)
		}
		link.Heal()
		deadline := time.Now().Add(15 * time.Second)
		for testutil.ToFloat64(p.app.Metrics.RateLimitLocal) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the limiter did not go back to Redis", fault)
			}
			p.call("/avb.v1.ProjectService/ListProjects", `{}`, "X-API-Key", p.keyOfTier(ten, "STANDARD"))
			time.Sleep(100 * time.Millisecond)
		}
		// Writes that broadcast an invalidation wait for Redis's breaker to
		// close too (the limiter may be back on Redis first).
		for !redisClosed.MatchString(p.readinessBody()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: redis did not come back: %s", fault, p.readinessBody())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// redisClosed matches a readiness report with Redis up and its breaker no longer open.
var redisClosed = regexp.MustCompile(`"redis":\{"status":"up"[^}]*"breaker":"(closed|half-open)"`)

// readinessBody is the readiness report as served.
func (p *platform) readinessBody() string {
	p.t.Helper()
	res, err := (&http.Client{Timeout: 10 * time.Second}).Get(p.base + "/health/ready/")
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// Guessing credentials is limited per client IP: failed authentications
// use up the IP's bucket, then the IP is refused before anything is
// checked, valid credentials included, until the bucket has room.
func TestFailedAuthenticationLimitedByIP(t *testing.T) {
	t.Parallel()
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), limitEnv(nil)), issuer, owner, app.WithDecider(&countingDecider{}))
	ten := p.tenant("guess", store.TierPro)
	key := p.keyOfTier(ten, "STANDARD")
	bad := "avb_" + strings.Repeat("x", 40)
	for i := range 5 { // the bucket holds 4; the 5th failure is refused by it
		if r := p.call("/avb.v1.ProjectService/ListProjects", `{}`, "X-API-Key", bad); r.status != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d %s", i, r.status, r.raw)
		}
	}
	r := p.call("/avb.v1.ProjectService/ListProjects", `{}`, "X-API-Key", key)
	if r.status != http.StatusTooManyRequests || r.reason != "rate_limited" || r.header.Get("Retry-After") == "" {
		t.Fatalf("after 5 failed guesses, a valid key from the same IP: %d %v %s", r.status, r.header, r.raw)
	}
	wait := time.Duration(headerInt(t, r.header, "Retry-After")) * time.Second
	time.Sleep(wait)
	if r := p.call("/avb.v1.ProjectService/ListProjects", `{}`, "X-API-Key", key); r.status != http.StatusOK {
		t.Fatalf("after Retry-After (%v): %d %s", wait, r.status, r.raw)
	}
}

// transactions is how many database transactions the platform has begun.
func transactions(p *platform) uint64 {
	m := &dto.Metric{}
	if err := p.app.Metrics.DBQueryDuration.WithLabelValues("begin").(prometheus.Histogram).Write(m); err != nil {
		p.t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// A key's usage count is what its limit admitted: refused requests are not
// usage.
func TestRefusedRequestsAreNotKeyUsage(t *testing.T) {
	t.Parallel()
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), limitEnv(nil)), issuer, owner, app.WithDecider(&countingDecider{}))
	ten := p.tenant("usage", store.TierPro)
	admin := p.token("ada-usage", ten.ID.String(), "admin")
	r := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"u","scopes":["API_KEY_SCOPE_ADMIN"]}`, bearer(admin)...))
	key, id := r["secret"].(string), r["apiKey"].(map[string]any)["id"].(string)
	for range 9 { // 6 admitted, 3 refused
		p.call("/avb.v1.ProjectService/ListProjects", `{}`, "X-API-Key", key)
	}
	var n int64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if err := ownerDB(t, p.owner).QueryRow(context.Background(), "SELECT usage_count FROM api_keys WHERE id = $1", id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n >= 6 || time.Now().After(deadline) {
			break
		}
	}
	time.Sleep(500 * time.Millisecond) // a late flush would show here
	if err := ownerDB(t, p.owner).QueryRow(context.Background(), "SELECT usage_count FROM api_keys WHERE id = $1", id).Scan(&n); err != nil || n != 6 {
		t.Fatalf("usage_count %d after 6 admitted and 3 refused requests (%v)", n, err)
	}
}
