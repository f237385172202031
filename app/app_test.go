package app_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/config"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// testConfig is a test-profile configuration pointing at real components.
func testConfig(t *testing.T, redisURL string) *config.Config {
	t.Helper()
	spiceAddr, spiceToken := testenv.SpiceDB(t)
	owner := testenv.Postgres(t)
	env := map[string]string{
		"AVB_PROFILE":                   "test",
		"AVB_HTTP_ADDR":                 "127.0.0.1:0",
		"AVB_DATABASE_URL":              testenv.AppURL(owner),
		"AVB_DATABASE_MIGRATION_URL":    owner,
		"AVB_DATABASE_MIGRATE_ON_START": "true",
		"AVB_OIDC_ISSUER_URL":           "http://127.0.0.1:1/realms/none",
		"AVB_REDIS_URL":                 redisURL,
		"AVB_TEMPORAL_ADDRESS":          testenv.Temporal(t),
		"AVB_SPICEDB_ENDPOINT":          spiceAddr,
		"AVB_SPICEDB_TOKEN":             spiceToken,
		"AVB_READINESS_TIMEOUT":         "500ms",
	}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

type report struct {
	Status string `json:"status"`
	Checks map[string]struct {
		Status    string  `json:"status"`
		LatencyMS float64 `json:"latency_ms"`
	} `json:"checks"`
}

func ready(t *testing.T, base string) (int, report) {
	t.Helper()
	res, err := http.Get(base + "/health/ready/")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var r report
	if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, r
}

// waitReady polls readiness until it returns want or the deadline passes.
func waitReady(t *testing.T, base string, want int) report {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, r := ready(t, base)
		if code == want {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("readiness stayed %d (%+v), want %d", code, r, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Readiness against the real components: all up -> 200; the test's own Redis
// stopped -> 503 naming redis; Redis back -> 200, with the same avb process.
func TestReadinessFollowsRealDependencies(t *testing.T) {
	redisProc := testenv.StartRedis(t)
	base := startPlatform(t, testConfig(t, "redis://"+redisProc.Addr()+"/0"), nil, "").base

	r := waitReady(t, base, http.StatusOK)
	for _, dep := range []string{"postgres", "redis", "temporal", "spicedb"} {
		if r.Checks[dep].Status != "up" {
			t.Fatalf("%s not up: %+v", dep, r)
		}
	}

	redisProc.Stop()
	r = waitReady(t, base, http.StatusServiceUnavailable)
	if r.Status != "not_ready" || r.Checks["redis"].Status != "down" {
		t.Fatalf("want not_ready with redis down, got %+v", r)
	}
	for _, dep := range []string{"postgres", "temporal", "spicedb"} {
		if r.Checks[dep].Status != "up" {
			t.Fatalf("%s reported down while only redis is: %+v", dep, r)
		}
	}

	redisProc.Start()
	waitReady(t, base, http.StatusOK)
}
