package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/agentvoicebox/avb/authn"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
	"github.com/agentvoicebox/avb/workflows"
)

// The deadlines the fault tests run with: short, so that a run is quick,
// and each distinct, so a measured latency shows which one bounded it.
var faultDeadlines = map[string]string{
	"AVB_SPICEDB_CHECK_TIMEOUT":                "400ms",
	"AVB_SPICEDB_WRITE_TIMEOUT":                "600ms",
	"AVB_DATABASE_CONNECT_TIMEOUT":             "500ms",
	"AVB_DATABASE_ACQUIRE_TIMEOUT":             "500ms",
	"AVB_DATABASE_QUERY_TIMEOUT":               "800ms",
	"AVB_DATABASE_STATEMENT_TIMEOUT":           "700ms",
	"AVB_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT": "2s",
	"AVB_REDIS_DIAL_TIMEOUT":                   "300ms",
	"AVB_REDIS_COMMAND_TIMEOUT":                "300ms",
	"AVB_TEMPORAL_START_TIMEOUT":               "600ms",
	"AVB_TEMPORAL_SIGNAL_TIMEOUT":              "600ms",
	"AVB_OIDC_FETCH_TIMEOUT":                   "500ms",
	"AVB_BREAKER_OPEN_FOR":                     "300ms",
	"AVB_READINESS_TIMEOUT":                    "300ms",
}

// faultBound is the most a request may take while one dependency misbehaves:
// the largest deadline of that dependency (one call reaches it, then its
// breaker is open) plus faultMargin for a shared, noisy machine.
func faultBound(dep string) time.Duration {
	setting := map[string]string{"postgres": "AVB_DATABASE_QUERY_TIMEOUT", "redis": "AVB_REDIS_COMMAND_TIMEOUT",
		"spicedb": "AVB_SPICEDB_WRITE_TIMEOUT", "oidc": "AVB_OIDC_FETCH_TIMEOUT", "temporal": "AVB_TEMPORAL_START_TIMEOUT"}[dep]
	d, err := time.ParseDuration(faultDeadlines[setting])
	if err != nil {
		panic("no deadline for " + dep)
	}
	return d
}

const faultMargin = 1500 * time.Millisecond

// links are the fault proxies between one platform and its dependencies.
type links struct {
	postgres, redis, spicedb, temporal, oidc *testenv.Faulty
}

func (l *links) of(dep string) *testenv.Faulty {
	return map[string]*testenv.Faulty{"postgres": l.postgres, "redis": l.redis, "spicedb": l.spicedb,
		"temporal": l.temporal, "oidc": l.oidc}[dep]
}

func (l *links) healAll() {
	for _, f := range []*testenv.Faulty{l.postgres, l.redis, l.spicedb, l.temporal, l.oidc} {
		if f != nil {
			f.Heal()
		}
	}
}

func withHost(raw, host string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic(err)
	}
	u.Host = host
	return u.String()
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic(err)
	}
	return u.Host
}

// faultPlatform is a platform whose every dependency is reached through a
// fault proxy: Postgres, Redis, SpiceDB, Temporal (with session workflows
// and the worker in process) and the OIDC issuer.
func faultPlatform(t *testing.T, extra map[string]string) (*platform, *links) {
	t.Helper()
	l := &links{}
	// The issuer is served behind its link, under the link's address, so
	// the tokens' iss and the discovery document name the link.
	mux := http.NewServeMux()
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	l.oidc = testenv.FaultyLink(t, "oidc", hostOf(ts.URL))
	issuer, err := authn.NewDevIssuer("http://" + l.oidc.Addr() + "/realms/avb")
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/", issuer.Handler())

	owner := testenv.Postgres(t)
	l.postgres = testenv.FaultyLink(t, "postgres", hostOf(owner))
	redisURL := testenv.RedisURL(t)
	l.redis = testenv.FaultyLink(t, "redis", hostOf(redisURL))
	spiceAddr, spiceToken := testenv.SpiceDB(t)
	l.spicedb = testenv.FaultyLink(t, "spicedb", spiceAddr)
	l.temporal = testenv.FaultyLink(t, "temporal", testenv.Temporal(t))

	env := map[string]string{
		"AVB_DATABASE_URL":      withHost(testenv.AppURL(owner), l.postgres.Addr()),
		"AVB_REDIS_URL":         withHost(redisURL, l.redis.Addr()),
		"AVB_SPICEDB_ENDPOINT":  l.spicedb.Addr(),
		"AVB_SPICEDB_TOKEN":     spiceToken,
		"AVB_TEMPORAL_ADDRESS":  l.temporal.Addr(),
		"AVB_SESSION_WORKFLOWS": "true",
		"AVB_RUN_WORKER":        "true",
	}
	for k, v := range faultDeadlines {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), env), issuer, owner)
	return p, l
}

// timedCall is p.call with a client that gives up after 20 s (a hang is a
// failure, not a stuck test), and the time the call took.
func (p *platform) timedCall(procedure, body string, headers ...string) (result, time.Duration) {
	p.t.Helper()
	start := time.Now()
	r := p.callWith(&http.Client{Timeout: 20 * time.Second}, procedure, body, headers...)
	return r, time.Since(start)
}

// worst keeps the worst latency seen per (dependency, fault), for the report.
type worst struct {
	mu sync.Mutex
	m  map[string]time.Duration
}

func (w *worst) see(key string, d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]time.Duration{}
	}
	w.m[key] = max(w.m[key], d)
}

func (w *worst) report(t *testing.T) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, d := range w.m {
		t.Logf("worst latency %-22s %6.0f ms", k, float64(d.Microseconds())/1000)
	}
}

// wantUnavailableWithin checks a call failed with the documented error in
// the dependency's bound.
func wantUnavailableWithin(t *testing.T, what string, r result, took, bound time.Duration) {
	t.Helper()
	if r.code != "unavailable" || r.reason != "dependency_unavailable" {
		t.Fatalf("%s: got %d %s/%s after %v, want unavailable/dependency_unavailable: %s", what, r.status, r.code, r.reason, took, r.raw)
	}
	if took > bound+faultMargin {
		t.Fatalf("%s: answered after %v, more than its deadline %v + %v", what, took, bound, faultMargin)
	}
}

// eventuallyOK retries a call until it succeeds (the breaker lets a probe
// through after AVB_BREAKER_OPEN_FOR), for at most 10 s.
func eventuallyOK(t *testing.T, p *platform, what, procedure, body string, headers ...string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, _ := p.timedCall(procedure, body, headers...)
		if r.status == http.StatusOK {
			return r.body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not recover: %d %s/%s: %s", what, r.status, r.code, r.reason, r.raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readiness returns the readiness status code and the state of one dependency.
func (p *platform) readiness(dep string) (int, string) {
	p.t.Helper()
	res, err := (&http.Client{Timeout: 10 * time.Second}).Get(p.base + "/health/ready/")
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	var rep struct {
		Checks map[string]struct {
			Status string `json:"status"`
		} `json:"checks"`
	}
	_ = json.NewDecoder(res.Body).Decode(&rep)
	return res.StatusCode, rep.Checks[dep].Status
}

func eventuallyReady(t *testing.T, p *platform, dep, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, got := p.readiness(dep)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("readiness of %s stayed %q, want %q", dep, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Regression: SpiceDB stops answering (paused: connections open, nothing
// answers). A new user's first request ends within the SpiceDB deadline with
// unavailable/dependency_unavailable, not minutes later as internal; and
// once SpiceDB answers again the same token works: the roles it carries are
// applied by a later request, not lost with the first one.
func TestSpiceDBHungNewUserRecovers(t *testing.T) {
	t.Parallel()
	p, l := faultPlatform(t, nil)
	ten := p.tenant("hung", store.TierPro)
	admin := p.token("admin0", ten.ID.String(), "admin")
	wantOK(t, p.call("/avb.v1.ProjectService/CreateProject", `{"name":"p1"}`, bearer(admin)...))

	l.spicedb.Inject(testenv.Blackhole, 0)
	// The request's own deadline caps every call it makes.
	r, took := p.timedCall("/avb.v1.ProjectService/ListProjects", "{}", append(bearer(p.token("hasty", ten.ID.String(), "viewer")), "Connect-Timeout-Ms", "150")...)
	if r.code != "deadline_exceeded" || took > 150*time.Millisecond+faultMargin {
		t.Fatalf("a request with a 150 ms deadline, SpiceDB hung: %d %s after %v", r.status, r.code, took)
	}
	t.Logf("a request with a 150 ms deadline, SpiceDB hung: %s after %v", r.code, took)
	viewer := p.token("fresh-viewer", ten.ID.String(), "viewer")
	r, took = p.timedCall("/avb.v1.ProjectService/ListProjects", "{}", bearer(viewer)...)
	wantUnavailableWithin(t, "first request, SpiceDB hung", r, took, faultBound("spicedb"))
	t.Logf("first request of a new user with SpiceDB hung: %v", took)
	// While SpiceDB is known down, requests fail at once.
	r, took = p.timedCall("/avb.v1.ProjectService/ListProjects", "{}", bearer(viewer)...)
	wantUnavailableWithin(t, "second request, SpiceDB hung", r, took, faultBound("spicedb"))
	eventuallyReady(t, p, "spicedb", "down")

	l.spicedb.Heal()
	body := eventuallyOK(t, p, "the same token after SpiceDB returned", "/avb.v1.ProjectService/ListProjects", "{}", bearer(viewer)...)
	if n := len(body["projects"].([]any)); n != 1 {
		t.Fatalf("viewer sees %d projects, want 1", n)
	}
	eventuallyReady(t, p, "spicedb", "up")
}

// The token's roles are reconciled whenever they differ from the ones
// applied: a role the identity provider takes away is revoked on the next
// request, one it adds is granted, and each change is audited.
func TestIdentityProviderRolesFollowTheToken(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("idp", store.TierPro)
	dev := p.token("dora", ten.ID.String(), "developer")
	wantOK(t, p.call("/avb.v1.ApiKeyService/ListApiKeys", "{}", bearer(dev)...))

	// Keycloak drops developer and leaves viewer.
	viewer := p.token("dora", ten.ID.String(), "viewer")
	wantErr(t, p.call("/avb.v1.ApiKeyService/ListApiKeys", "{}", bearer(viewer)...), http.StatusForbidden, "permission_denied", "permission_denied")
	wantOK(t, p.call("/avb.v1.ProjectService/ListProjects", "{}", bearer(viewer)...))

	admin := p.token("root", ten.ID.String(), "admin")
	entries := wantOK(t, p.call("/avb.v1.AuditService/ListAuditLogs", `{"filter":{"action":"permission_change","resourceType":"user"}}`, bearer(admin)...))
	if n := len(entries["entries"].([]any)); n < 3 {
		t.Fatalf("want an audit entry per role change (developer, viewer, admin), got %d: %v", n, entries)
	}
}

// Every dependency, every fault: each RPC that needs the dependency ends
// within the dependency's deadline (plus a margin) with
// unavailable/dependency_unavailable or succeeds; RPCs that do not need it
// are unaffected; readiness reports it; everything recovers without a
// restart once the fault is removed.
func TestEveryDependencyEveryFault(t *testing.T) {
	t.Parallel()
	p, l := faultPlatform(t, nil)
	ten := p.tenant("faults", store.TierEnterprise)
	admin := p.token("boss", ten.ID.String(), "admin")
	wantOK(t, p.call("/avb.v1.ProjectService/CreateProject", `{"name":"seed"}`, bearer(admin)...))
	var w worst

	for _, dep := range []string{"postgres", "redis", "spicedb", "oidc"} {
		for _, fault := range testenv.Faults {
			name := fmt.Sprintf("%s/%s", dep, fault)
			arg := 0
			if fault == testenv.Latency {
				arg = 3000 // far beyond every deadline
			}
			// The RPC that needs the dependency, each time with what makes
			// it reach the dependency (no cached answer).
			needs := func(round string) (result, time.Duration) {
				switch dep {
				case "spicedb":
					// A new user: their roles are written, their checks
					// are not cached.
					return p.timedCall("/avb.v1.ProjectService/ListProjects", "{}", bearer(p.token("u-"+round, ten.ID.String(), "viewer"))...)
				case "redis":
					// A revocation answers only once every instance was
					// told. Creating the key only adds access: it is
					// made and its secret shown even while Redis fails.
					created, _ := p.timedCall("/avb.v1.ApiKeyService/CreateApiKey", fmt.Sprintf(`{"name":"r-%s","scopes":["API_KEY_SCOPE_REALTIME"]}`, round), bearer(admin)...)
					if created.status != http.StatusOK || created.body["secret"] == nil {
						t.Fatalf("%s: a key created while Redis fails: %d %s", round, created.status, created.raw)
					}
					id := created.body["apiKey"].(map[string]any)["id"].(string)
					return p.timedCall("/avb.v1.ApiKeyService/RevokeApiKey", `{"apiKeyId":"`+id+`"}`, bearer(admin)...)
				case "oidc":
					// A token signed by a key the server has not seen
					// makes it fetch the issuer's keys.
					if err := p.issuer.Rotate(); err != nil {
						t.Fatal(err)
					}
					return p.timedCall("/avb.v1.ProjectService/ListProjects", "{}", bearer(p.token("boss", ten.ID.String(), "admin"))...)
				}
				return p.timedCall("/avb.v1.ProjectService/ListProjects", "{}", bearer(admin)...)
			}
			l.of(dep).Inject(fault, arg)
			r, took := needs(string(fault))
			w.see(name, took)
			if r.status != http.StatusOK {
				wantUnavailableWithin(t, name, r, took, faultBound(dep))
			} else if fault != testenv.Latency || dep == "oidc" {
				t.Fatalf("%s: the RPC that needs it succeeded", name)
			}
			// An RPC that needs nothing is unaffected.
			if r, took := p.timedCall("/avb.v1.SystemService/GetServerInfo", "{}"); r.status != http.StatusOK || took > time.Second {
				t.Fatalf("%s: GetServerInfo %d after %v", name, r.status, took)
			}
			if dep != "oidc" {
				eventuallyReady(t, p, dep, "down")
			}
			l.of(dep).Heal()
			if dep != "oidc" {
				eventuallyReady(t, p, dep, "up")
			}
			// Everything recovers without a restart: the same RPC works.
			for attempt := 0; ; attempt++ {
				r, _ := needs(fmt.Sprintf("%s-again-%d", fault, attempt))
				if r.status == http.StatusOK {
					break
				}
				if attempt == 50 {
					var perr error
					if dep == "redis" {
						perr = p.app.Redis().Ping(context.Background()).Err()
					}
					t.Fatalf("%s: no recovery: %d %s/%s (breaker %s, ping %v)", name, r.status, r.code, r.reason, p.app.Dependencies().Guards()[dep].State(), perr)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	// A little latency (under every deadline) only slows calls down.
	for _, dep := range []string{"postgres", "redis", "spicedb"} {
		l.of(dep).Inject(testenv.Latency, 50)
	}
	r, took := p.timedCall("/avb.v1.ProjectService/ListProjects", "{}", bearer(admin)...)
	if r.status != http.StatusOK {
		t.Fatalf("50 ms of latency on every dependency: %d %s/%s after %v", r.status, r.code, r.reason, took)
	}
	l.healAll()
	w.report(t)
}

// Regression: Temporal stops answering. A call that streams real-time 20 ms
// frames from its first moment opens at once and completes its turn (its
// audio is not charged for a wait on Temporal); CreateSession answers at
// once. When Temporal returns, both sessions get their workflows: the call's
// turn and end reach it (status, metrics and usage from the workflow), and
// the session nobody joined ends at its idle timeout.
func TestTemporalHungSessionsCarryOn(t *testing.T) {
	t.Parallel()
	p, l := faultPlatform(t, nil)
	ten := p.tenant("tmp", store.TierPro)
	key, _ := p.realtimeKey(ten)

	l.temporal.Inject(testenv.Blackhole, 0)
	start := time.Now()
	created := wantOK(t, p.callWith(&http.Client{Timeout: 20 * time.Second}, "/avb.v1.SessionService/CreateSession",
		`{"config":{"turnDetection":{"idleTimeoutSeconds":2}}}`, "X-API-Key", key))
	if took := time.Since(start); took > faultMargin {
		t.Fatalf("CreateSession took %v with Temporal hung", took)
	}
	idleID := created["session"].(map[string]any)["id"].(string)

	client := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))
	tr := converse(t, client, 20*time.Millisecond)
	if tr.final != ask || tr.done == nil {
		t.Fatalf("the call with Temporal hung: heard %q, done %v", tr.final, tr.done)
	}
	t.Logf("with Temporal hung: the call opened in %v", tr.open)
	if tr.open > time.Second {
		t.Fatalf("the call took %v to open with Temporal hung", tr.open)
	}
	tctx := tenancy.With(context.Background(), ten.ID)
	callID := uuid.MustParse(tr.sessionID)
	if s, err := p.app.DB().Sessions().Get(tctx, callID); err != nil || s.WorkflowStartedAt != nil {
		t.Fatalf("call session before Temporal returned: %+v %v", s, err)
	}

	l.temporal.Heal()
	final := func(id uuid.UUID) *store.Session {
		t.Helper()
		deadline := time.Now().Add(45 * time.Second)
		for {
			s, err := p.app.DB().Sessions().Get(tctx, id)
			if err == nil && s.Status != store.SessionActive && s.Status != store.SessionCreated {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("session %s still %s after Temporal returned (%v); reporter pending %d", id, s.Status, err, p.app.Reporter().Pending())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	call := final(callID)
	if call.Status != store.SessionCompleted || call.Turns != 1 || call.WorkflowStartedAt == nil {
		t.Fatalf("call session after Temporal returned: %s, %d turns, workflow %v", call.Status, call.Turns, call.WorkflowStartedAt)
	}
	idle := final(uuid.MustParse(idleID))
	if idle.Status != store.SessionCompleted || idle.Error != workflows.ReasonIdle {
		t.Fatalf("idle session after Temporal returned: %s %q", idle.Status, idle.Error)
	}
	var usage int
	if err := ownerDB(t, p.owner).QueryRow(context.Background(), "SELECT count(*) FROM usage_ledger WHERE session_id = $1", tr.sessionID).Scan(&usage); err != nil || usage != 5 {
		t.Fatalf("usage ledger rows %d (%v)", usage, err)
	}
	if n := p.app.Reporter().Dropped(); n != 0 {
		t.Fatalf("%d workflow reports dropped", n)
	}
}

// Temporal under every fault: CreateSession answers at once each time, and
// every session made during the faults gets its workflow once Temporal is
// back (the idle timeout and the 24 h limit apply to all of them).
func TestTemporalEveryFault(t *testing.T) {
	t.Parallel()
	p, l := faultPlatform(t, nil)
	ten := p.tenant("tall", store.TierEnterprise)
	key, _ := p.realtimeKey(ten)
	var w worst
	var ids []uuid.UUID
	for _, fault := range testenv.Faults {
		l.temporal.Inject(fault, 3000)
		for range 3 {
			start := time.Now()
			r := p.callWith(&http.Client{Timeout: 20 * time.Second}, "/avb.v1.SessionService/CreateSession", `{}`, "X-API-Key", key)
			took := time.Since(start)
			w.see("temporal/"+string(fault), took)
			body := wantOK(t, r)
			if took > faultMargin {
				t.Fatalf("temporal/%s: CreateSession took %v", fault, took)
			}
			ids = append(ids, uuid.MustParse(body["session"].(map[string]any)["id"].(string)))
		}
		if fault != testenv.Latency {
			eventuallyReady(t, p, "temporal", "down")
		}
		l.temporal.Heal()
		eventuallyReady(t, p, "temporal", "up")
	}
	tctx := tenancy.With(context.Background(), ten.ID)
	deadline := time.Now().Add(45 * time.Second)
	for _, id := range ids {
		for {
			s, err := p.app.DB().Sessions().Get(tctx, id)
			if err == nil && s.WorkflowStartedAt != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("session %s has no workflow after Temporal returned (%v); reporter pending %d", id, err, p.app.Reporter().Pending())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	w.report(t)
}

// openAIServer is an OpenAI-compatible chat completions server: it streams
// its answer as server-sent events, one word a chunk.
func openAIServer(t *testing.T, answer string) string {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, word := range strings.Fields(answer) {
			fmt.Fprintf(w, "data: {\"choices\":[{\"delta\":{\"content\":%q}}]}\n\n", word+" ")
			w.(http.Flusher).Flush()
		}
		fmt.Fprint(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(ts.Close)
	return ts.URL
}

// askOnce runs one turn of a call with the given model and returns the
// reply, or the error event's reason, and the time from the end of speech
// to either.
func askOnce(t *testing.T, client avbv1connect.VoiceServiceClient, model string) (reply, reason string, took time.Duration) {
	t.Helper()
	reply, reason, _, took = askTurn(t, client, model)
	return reply, reason, took
}

// askTurn is askOnce that also returns the error event's message.
func askTurn(t *testing.T, client avbv1connect.VoiceServiceClient, model string) (reply, reason, message string, took time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream := client.Converse(ctx)
	cfg := &avbv1.SessionConfig{PhraseHints: callConfig.PhraseHints, Model: model}
	if err := stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Start{Start: &avbv1.SessionStart{Config: cfg}}}); err != nil {
		t.Fatal(err)
	}
	go askIn(t, stream, 20*time.Millisecond)
	defer func() { _ = stream.CloseRequest() }()
	var stopped time.Time
	for {
		msg, err := stream.Receive()
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		switch ev := msg.GetEvent().GetEvent().(type) {
		case *avbv1.VoiceEvent_TranscriptFinal:
			stopped = time.Now()
		case *avbv1.VoiceEvent_ResponseDone:
			return ev.ResponseDone.GetText(), "", "", time.Since(stopped)
		case *avbv1.VoiceEvent_Error:
			return "", ev.Error.GetReason(), ev.Error.GetMessage(), time.Since(stopped)
		}
	}
}

// An OpenAI-compatible model server under every fault: the turn ends within
// the first-token deadline with an error event (provider_failed), the call
// itself is not broken, and the next call after the fault is answered.
func TestLLMProviderEveryFault(t *testing.T) {
	t.Parallel()
	llm := testenv.FaultyLink(t, "llm", hostOf(openAIServer(t, "Your meeting is cancelled.")))
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	env := map[string]string{"AVB_OPENAI_BASE_URL": "http://" + llm.Addr() + "/v1", "AVB_OPENAI_MODEL": "test-model",
		"AVB_LLM_FIRST_TOKEN_TIMEOUT": "800ms", "AVB_LLM_CHUNK_TIMEOUT": "500ms", "AVB_BREAKER_OPEN_FOR": "300ms"}
	p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), env), issuer, owner)
	ten := p.tenant("llm", store.TierPro)
	key, _ := p.realtimeKey(ten)
	client := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))

	if reply, reason, _ := askOnce(t, client, "openai"); reply == "" {
		t.Fatalf("healthy model server: error %q", reason)
	}
	var w worst
	for _, fault := range testenv.Faults {
		llm.Inject(fault, 3000)
		reply, reason, took := askOnce(t, client, "openai")
		w.see("llm/"+string(fault), took)
		if reply != "" || reason != "provider_failed" {
			t.Fatalf("llm/%s: reply %q, reason %q", fault, reply, reason)
		}
		if took > 800*time.Millisecond+faultMargin {
			t.Fatalf("llm/%s: the turn failed %v after the speech ended, past the first-token deadline", fault, took)
		}
		llm.Heal()
		time.Sleep(400 * time.Millisecond) // the breaker's open window
		if reply, reason, _ := askOnce(t, client, "openai"); reply == "" {
			t.Fatalf("llm/%s healed: error %q", fault, reason)
		}
	}
	w.report(t)
}

// A server that stops while Temporal is unreachable gives its calls' last
// reports time to get through: Temporal comes back during the shutdown, and
// the next server's worker completes the session with the call's turn.
func TestShutdownDeliversLateReports(t *testing.T) {
	t.Parallel()
	p, l := faultPlatform(t, nil)
	ten := p.tenant("bye", store.TierPro)
	key, _ := p.realtimeKey(ten)
	l.temporal.Inject(testenv.Blackhole, 0)
	tr := converse(t, avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key)), 20*time.Millisecond)
	if p.app.Reporter().Pending() == 0 {
		t.Fatal("reports were delivered with Temporal hung")
	}
	time.AfterFunc(time.Second, l.temporal.Heal)
	p.stop()
	if n := p.app.Reporter().Pending(); n != 0 {
		t.Fatalf("%d reports left undelivered at shutdown", n)
	}
	// The next server's worker finishes the session with what was reported.
	next := startPlatform(t, p.cfg, p.issuer, p.owner)
	tctx := tenancy.With(context.Background(), ten.ID)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		s, err := next.app.DB().Sessions().Get(tctx, uuid.MustParse(tr.sessionID))
		if err == nil && s.Status == store.SessionCompleted && s.Turns == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session after the shutdown: %+v (%v)", s, err)
		}
	}
}

// realtimeKey creates a realtime-scoped API key in ten, as its administrator
// would, and returns its secret and id.
func (p *platform) realtimeKey(ten *store.Tenant) (secret, id string) {
	p.t.Helper()
	admin := p.token("ada", ten.ID.String(), "admin")
	r := p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...)
	if r.status != http.StatusOK {
		p.t.Fatalf("create a realtime key: %d %s", r.status, r.raw)
	}
	return r.body["secret"].(string), r.body["apiKey"].(map[string]any)["id"].(string)
}
