package app_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/loadtest"
	"github.com/agentvoicebox/avb/store"
)

// loadPlatform is a platform with a realtime API key, for load tests;
// child runs the server as a process of its own (this one then only
// administers), so what is measured is the server alone.
func loadPlatform(t *testing.T, child bool) (base, key string, logs *testenv.LogBuffer) {
	t.Helper()
	base, key, logs, _, _ = loadPlatformAdmin(t, child)
	return base, key, logs
}

// loadPlatformAdmin is loadPlatform with the administering platform and an
// admin's credentials in the load tenant.
func loadPlatformAdmin(t *testing.T, child bool) (base, key string, logs *testenv.LogBuffer, p *platform, admin []string) {
	t.Helper()
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	env := identityEnv(t, owner, issuer.Issuer(), map[string]string{"AVB_MAX_CALLS_PER_TENANT": "2000", "AVB_LOG_LEVEL": "error"})
	if child { // as in production: each call is a session workflow (the worker runs here)
		env["AVB_TEMPORAL_ADDRESS"], env["AVB_SESSION_WORKFLOWS"] = testenv.Temporal(t), "true"
	}
	adminEnv := map[string]string{"AVB_RUN_WORKER": fmt.Sprint(child)}
	for k, v := range env {
		adminEnv[k] = v
	}
	// AVB_LOADTEST_SERVER_<NAME>=v sets <NAME>=v for the server under load
	// (AVB_LOADTEST_SERVER_AVB_TTS_CACHE_BYTES=0: without the synthesis
	// cache; AVB_LOADTEST_SERVER_AVB_TTS_WORKERS=2: synthesis workers, in a
	// child server only).
	serverEnv := adminEnv
	if child {
		serverEnv = env
	}
	for _, kv := range os.Environ() {
		if rest, ok := strings.CutPrefix(kv, "AVB_LOADTEST_SERVER_"); ok {
			k, v, _ := strings.Cut(rest, "=")
			serverEnv[k] = v
		}
	}
	p = startPlatform(t, identityConfig(t, owner, issuer.Issuer(), adminEnv), issuer, owner)
	ten := p.tenant("load", store.TierEnterprise)
	tok := p.token("ada", ten.ID.String(), "admin")
	key = wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"load","scopes":["API_KEY_SCOPE_REALTIME"]}`, bearer(tok)...))["secret"].(string)
	admin = bearer(tok)
	if !child {
		return p.base, key, &testenv.LogBuffer{}, p, admin
	}
	_, base, logs = startChild(t, env)
	return base, key, logs, p, admin
}

func tone() []int16 {
	pcm := make([]int16, 16000)
	for i := range 6400 {
		pcm[i] = int16(8192 * math.Sin(2*math.Pi*440*float64(i)/16000))
	}
	return pcm
}

// The load tool end to end, small: passthrough calls get every frame back
// in time, full-pipeline calls get their turns answered.
func TestLoadTool(t *testing.T) {
	base, key, _ := loadPlatform(t, false)
	rep, err := loadtest.Run(context.Background(), loadtest.Config{Server: base, APIKey: key, Calls: 4, Duration: 2 * time.Second,
		Ramp: 200 * time.Millisecond, Mode: loadtest.Passthrough, Utterance: tone(), MetricsURL: base + "/metrics"})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep)
	if rep.Failed > 0 || rep.Opened != 4 || rep.FramesSent != 4*100 || rep.FramesEchoed != rep.FramesSent || rep.FrameDelay.P99 > 100 {
		t.Fatalf("passthrough: %s", rep)
	}
	ask := spokenPCM(t, ask, 3500)
	rep, err = loadtest.Run(context.Background(), loadtest.Config{Server: base, APIKey: key, Calls: 2, Duration: time.Duration(len(ask)/16) * time.Millisecond,
		Mode: loadtest.Full, Utterance: ask, Phrases: callConfig.PhraseHints, MetricsURL: base + "/metrics"})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep)
	if rep.Failed > 0 || rep.Turns != 2 || rep.ServerFirst.N != 2 || rep.TurnLatency.P99 > 500 || rep.TTSCacheHits+rep.TTSCacheMisses < 2 {
		t.Fatalf("full: %s", rep)
	}
}

// TestLoadCapacity finds how many calls two cores hold: set AVB_LOADTEST to
// a list of call counts ("50,100,200") and AVB_LOADTEST_MODE to
// passthrough, full or idle (AVB_LOADTEST_BASELINE=1: passthrough runs
// against a bare connect-go echo handler first, in the same run;
// AVB_LOADTEST_LOCKSTEP=1: every call speaks in step, the worst case). The server runs as a child process; the load
// runs here, on the same two cores. It is a measurement, not a check, and is
// skipped otherwise.
func TestLoadCapacity(t *testing.T) {
	counts := os.Getenv("AVB_LOADTEST")
	if counts == "" {
		t.Skip("set AVB_LOADTEST=50,100,200 to measure capacity")
	}
	mode := loadtest.Mode(os.Getenv("AVB_LOADTEST_MODE"))
	if mode == "" {
		mode = loadtest.Passthrough
	}
	// AVB_LOADTEST_INPROCESS=1 serves in this process, for go test -cpuprofile.
	base, key, logs := loadPlatform(t, os.Getenv("AVB_LOADTEST_INPROCESS") == "")
	utt, phrases := tone(), []string(nil)
	if mode == loadtest.Full {
		utt, phrases = spokenPCM(t, ask, 3500), callConfig.PhraseHints
	}
	for _, c := range splitInts(t, counts) {
		if mode == loadtest.Passthrough && os.Getenv("AVB_LOADTEST_BASELINE") != "" {
			// The same load against a bare connect-go echo handler, first.
			url, stop, err := loadtest.StartBaseline()
			if err != nil {
				t.Fatal(err)
			}
			rep, err := loadtest.Run(context.Background(), loadtest.Config{Server: url, Calls: c, Duration: 20 * time.Second,
				Ramp: 2 * time.Second, Mode: mode, Utterance: utt, Lockstep: os.Getenv("AVB_LOADTEST_LOCKSTEP") != ""})
			stop()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("\nbaseline (bare connect-go echo):\n%s", rep)
			time.Sleep(2 * time.Second)
		}
		measure(t, loadtest.Config{Server: base, APIKey: key, Calls: c, Mode: mode, Utterance: utt, Phrases: phrases,
			Lockstep: os.Getenv("AVB_LOADTEST_LOCKSTEP") != ""}, logs)
	}
}

// measure runs 20 s of calls (after a 2 s ramp) against cfg's server and
// logs the report; a failed call fails the test with the server's log.
func measure(t *testing.T, cfg loadtest.Config, logs *testenv.LogBuffer) {
	t.Helper()
	cfg.Duration, cfg.Ramp, cfg.MetricsURL = 20*time.Second, 2*time.Second, cfg.Server+"/metrics"
	rep, err := loadtest.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", rep)
	if rep.Failed > 0 {
		t.Fatalf("server log:\n%s", logs)
	}
	time.Sleep(2 * time.Second)
}

func splitInts(t *testing.T, s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}
