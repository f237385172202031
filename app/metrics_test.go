package app_test

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/store"
)

// scrape sums each series of /metrics by name (all label sets together),
// and returns the raw text.
func scrape(t *testing.T, p *platform) (map[string]float64, string) {
	t.Helper()
	res, err := http.Get(p.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	sums := map[string]float64{}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		name := line[:i]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			name = name[:j]
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			sums[name] += v
		}
	}
	return sums, string(raw)
}

var uuidLike = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// A short tour (curl, a voice call, an error, a request over its limit)
// moves every series the platform promises, and no series is labelled by
// a tenant, session or any other id.
func TestMetricsTour(t *testing.T) {
	t.Parallel()
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), limitEnv(map[string]string{
		"AVB_TEMPORAL_ADDRESS": testenv.Temporal(t), "AVB_SESSION_WORKFLOWS": "true", "AVB_RUN_WORKER": "true",
		"AVB_RATE_LIMIT_API_KEY": "100000"})), issuer, owner)
	before, _ := scrape(t, p)
	ten := p.tenant("tour", store.TierPro)
	key, _ := p.realtimeKey(ten)

	// curl: a read and an error.
	admin := bearer(p.token("ada-tour", ten.ID.String(), "admin"))
	wantOK(t, p.call("/avb.v1.ProjectService/ListProjects", `{}`, admin...))
	wantOK(t, p.call("/avb.v1.ProjectService/ListProjects", `{}`, admin...))
	wantErr(t, p.call("/avb.v1.ProjectService/GetProject", `{"projectId":"6c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"}`, admin...), 403, "permission_denied", "permission_denied")
	// Anonymous callers are limited to 4 a minute here.
	for range 5 {
		p.call("/avb.v1.SystemService/GetServerInfo", `{}`)
	}
	// A voice call, through its session workflow.
	client := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))
	if reply, reason, _ := askOnce(t, client, ""); reply == "" {
		t.Fatalf("the call: %s", reason)
	}

	want := []string{
		"http_requests_total", "http_request_duration_seconds_count", "rpc_requests_total",
		"stream_messages_total", "sessions_total", "session_duration_seconds_count", "voice_turn_latency_seconds_count",
		"stt_requests_total", "tts_requests_total", "llm_requests_total",
		"db_query_duration_seconds_count", "cache_hits_total", "cache_misses_total",
		"rate_limit_rejections_total", "temporal_workflows_total", "dependency_up", "llm_tokens_total",
	}
	var after map[string]float64
	var raw string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		after, raw = scrape(t, p)
		var still []string
		for _, name := range want {
			if after[name] <= before[name] {
				still = append(still, name)
			}
		}
		if len(still) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("series that did not move: %v", still)
		}
		if res, err := http.Get(p.base + "/health/ready/"); err == nil { // dependency_up
			res.Body.Close()
		}
	}
	if !strings.Contains(raw, "stream_connections{") {
		t.Error("stream_connections is missing")
	}
	if id := uuidLike.FindString(raw); id != "" {
		t.Errorf("a series is labelled by an id (%s)", id)
	}
	t.Logf("after the tour: %d db queries, %v cache hits, %v misses, %v workflows counted",
		int(after["db_query_duration_seconds_count"]), after["cache_hits_total"], after["cache_misses_total"], after["temporal_workflows_total"])
}
