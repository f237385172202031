package app_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/sdk/go/voicecall"
	"github.com/agentvoicebox/avb/store"
)

// Three `avb serve` instances share one Postgres, Redis, SpiceDB and
// Temporal. Converse calls spread across them (the Go helper, voicecall),
// and browser-path calls hold ConverseEvents on one instance while their
// audio is sprayed round-robin over all three (forwarded to the holder).
// One instance is killed (SIGKILL) and another drained (SIGTERM) with calls
// on them: every Converse call rejoins its session elsewhere and goes on
// with its history, a browser call rejoins by id, and each session's usage
// in the ledger is what its caller was told across every instance it used.
func TestCallsOutliveTheirInstance(t *testing.T) {
	p, key, instances := cluster(t, 3)
	for i, in := range instances {
		if !strings.Contains(in.logs.String(), "speech synthesis in worker processes") {
			t.Fatalf("instance %d synthesizes in process:\n%s", i, in.logs.String())
		}
	}
	endpoints := func(first int) []avbv1connect.VoiceServiceClient {
		var out []avbv1connect.VoiceServiceClient
		for i := range instances {
			out = append(out, instances[(first+i)%len(instances)].voice)
		}
		return out
	}
	logs := func() string { return clusterLogs(instances) }

	// Six Converse calls, two on each instance, one turn each.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type callState struct {
		call      *voicecall.Call
		home      int
		outTokens int64
		replies   []string
		moves     int // session_moving events seen
	}
	calls := make([]*callState, 6)
	var wg sync.WaitGroup
	for i := range calls {
		c, err := voicecall.Dial(ctx, voicecall.Options{Endpoints: endpoints(i % 3), Start: &avbv1.SessionStart{Config: callConfig}})
		if err != nil {
			t.Fatalf("call %d: %v\n%s", i, err, logs())
		}
		if ev, err := c.Receive(); err != nil || ev.GetSessionStarted() == nil {
			t.Fatalf("call %d: first event %v %v", i, ev, err)
		}
		calls[i] = &callState{call: c, home: i % 3}
	}
	// turnOf says the request into a call and waits for the reply.
	turnOf := func(c *callState, wantResumed bool) error {
		b := spoken(t, ask, 800)
		go func() {
			for i := 0; i < len(b); i += 640 {
				_ = c.call.SendAudio(b[i:min(i+640, len(b))])
				time.Sleep(20 * time.Millisecond)
			}
		}()
		resumed := !wantResumed
		for {
			ev, err := c.call.Receive()
			if err != nil {
				return err
			}
			if ev.GetSessionMoving() != nil {
				c.moves++
			}
			if s := ev.GetSessionStarted(); s != nil && s.GetResumed() {
				if s.GetResumedTurns() < 1 {
					return fmt.Errorf("rejoined with %d turns of history", s.GetResumedTurns())
				}
				resumed = true
			}
			if d := ev.GetResponseDone(); d != nil {
				c.outTokens += d.GetOutputTokens()
				c.replies = append(c.replies, d.GetText())
				if !resumed {
					return fmt.Errorf("answered without rejoining")
				}
				return nil
			}
			if e := ev.GetError(); e != nil {
				return fmt.Errorf("error event %v", e)
			}
		}
	}
	each := func(which func(*callState) bool, wantResumed bool) {
		t.Helper()
		errs := make([]error, len(calls))
		for i, c := range calls {
			if !which(c) {
				continue
			}
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = turnOf(c, wantResumed) }()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("call %d (instance %d): %v\n%s", i, calls[i].home, err, logs())
			}
		}
	}
	all := func(*callState) bool { return true }
	each(all, false)
	// The turns are recorded (the history a rejoin restores) and reported.
	for _, c := range calls {
		waitForEvents(t, p, key, c.call.SessionID(), "response", 1)
	}

	// A browser-path call held on instance 0, its audio sprayed over all
	// three: the hops are timed against requests sent to the holder.
	browser := avbv1connect.NewVoiceServiceClient(http.DefaultClient, instances[0].base, withKey(key))
	bctx, bcancel := context.WithCancel(ctx)
	defer bcancel()
	events, err := browser.ConverseEvents(bctx, connect.NewRequest(&avbv1.ConverseEventsRequest{Start: &avbv1.SessionStart{Config: callConfig}}))
	if err != nil {
		t.Fatal(err)
	}
	if !events.Receive() || events.Msg().GetEvent().GetSessionStarted() == nil {
		t.Fatalf("browser call: %v\n%s", events.Err(), logs())
	}
	browserID := events.Msg().GetEvent().GetSessionStarted().GetSession().GetId()
	plain := make([]avbv1connect.VoiceServiceClient, len(instances))
	for i, in := range instances {
		plain[i] = avbv1connect.NewVoiceServiceClient(http.DefaultClient, in.base, withKey(key))
	}
	pcm := spoken(t, ask, 800)
	var local, routed []time.Duration
	for n, i := 0, 0; i < len(pcm); n, i = n+1, i+640 {
		start := time.Now()
		if _, err := plain[n%3].SendAudio(ctx, connect.NewRequest(&avbv1.SendAudioRequest{SessionId: browserID, Audio: pcm[i:min(i+640, len(pcm))]})); err != nil {
			t.Fatalf("frame %d via instance %d: %v\n%s", n, n%3, err, logs())
		}
		if d := time.Since(start); n%3 == 0 {
			local = append(local, d)
		} else {
			routed = append(routed, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var reply string
	for reply == "" && events.Receive() {
		reply = events.Msg().GetEvent().GetResponseDone().GetText()
	}
	if reply == "" {
		t.Fatalf("browser call, audio sprayed over three instances, was not answered: %v\n%s", events.Err(), logs())
	}
	t.Logf("browser path, per frame: to the holder p50 %v p99 %v; routed p50 %v p99 %v", pct(local, 50), pct(local, 99), pct(routed, 50), pct(routed, 99))
	waitForEvents(t, p, key, browserID, "response", 1)

	// Kill instance 0 with calls on it: they rejoin elsewhere and go on.
	killed := time.Now()
	instances[0].kill()
	each(func(c *callState) bool { return c.home == 0 }, true)
	for _, c := range calls {
		if c.home == 0 {
			n, took := c.call.Resumes()
			t.Logf("call %s resumed %d time(s), %v after the kill (answered %v after it)", c.call.SessionID(), n, took, time.Since(killed).Round(time.Millisecond))
			if n != 1 {
				t.Fatalf("resumed %d times", n)
			}
		}
	}
	// The browser call's event stream broke with its instance: rejoined by
	// id on another, it is answered there.
	for events.Receive() {
	}
	if events, err = plain[1].ConverseEvents(bctx, connect.NewRequest(&avbv1.ConverseEventsRequest{Start: &avbv1.SessionStart{SessionId: browserID}})); err != nil {
		t.Fatal(err)
	}
	if !events.Receive() || !events.Msg().GetEvent().GetSessionStarted().GetResumed() {
		t.Fatalf("browser rejoin: %v %v\n%s", events.Msg(), events.Err(), logs())
	}
	for n, i := 0, 0; i < len(pcm); n, i = n+1, i+640 {
		if _, err := plain[1+n%2].SendAudio(ctx, connect.NewRequest(&avbv1.SendAudioRequest{SessionId: browserID, Audio: pcm[i:min(i+640, len(pcm))]})); err != nil {
			t.Fatalf("frame %d after the rejoin: %v", n, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for reply = ""; reply == "" && events.Receive(); {
		reply = events.Msg().GetEvent().GetResponseDone().GetText()
	}
	if reply == "" {
		t.Fatalf("rejoined browser call not answered: %v\n%s", events.Err(), logs())
	}
	if _, err := plain[2].SendControl(ctx, connect.NewRequest(&avbv1.SendControlRequest{SessionId: browserID,
		Control: &avbv1.ClientControl{Control: &avbv1.ClientControl_End{End: &avbv1.SessionEnd{}}}})); err != nil {
		t.Fatalf("end the browser call from another instance: %v", err)
	}

	// Drain instance 1: its calls are told to move, and do.
	drained := time.Now()
	instances[1].term()
	each(func(c *callState) bool { return c.home == 1 }, true)
	for _, c := range calls {
		if c.home == 1 {
			n, took := c.call.Resumes()
			t.Logf("call %s moved off the draining instance in %v (answered %v after SIGTERM)", c.call.SessionID(), took, time.Since(drained).Round(time.Millisecond))
			if n != 1 || c.moves != 1 {
				t.Fatalf("resumed %d times, told to move %d times", n, c.moves)
			}
		}
	}

	// Everyone hangs up; every session ends completed, with the usage its
	// caller was told.
	for _, c := range calls {
		if err := c.call.Close(); err != nil {
			t.Fatalf("hang up %s: %v", c.call.SessionID(), err)
		}
	}
	sessions := avbv1connect.NewSessionServiceClient(http.DefaultClient, p.base, withKey(key))
	db := ownerDB(t, p.owner)
	for _, c := range calls {
		var sess *avbv1.Session
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			res, err := sessions.GetSession(ctx, connect.NewRequest(&avbv1.GetSessionRequest{SessionId: c.call.SessionID()}))
			if err != nil {
				t.Fatal(err)
			}
			if sess = res.Msg.GetSession(); sess.GetStatus() != avbv1.SessionStatus_SESSION_STATUS_ACTIVE || time.Now().After(deadline) {
				break
			}
		}
		wantTurns := int32(1 + map[int]int{0: 1, 1: 1}[c.home])
		if sess.GetStatus() != avbv1.SessionStatus_SESSION_STATUS_COMPLETED || sess.GetMetrics().GetTurns() != wantTurns {
			t.Fatalf("session of a call from instance %d: %v %q, %d turns (want %d)\n%s", c.home, sess.GetStatus(), sess.GetError(), sess.GetMetrics().GetTurns(), wantTurns, logs())
		}
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			var tokens float64
			err := db.QueryRow(context.Background(),
				"SELECT quantity FROM usage_ledger WHERE session_id = $1 AND kind = 'output_tokens'", c.call.SessionID()).Scan(&tokens)
			if err == nil && tokens == float64(c.outTokens) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("ledger output tokens %v (%v), the caller was told %d", tokens, err, c.outTokens)
			}
		}
	}
}

// waitForEvents waits until a session has recorded n events of a type.
func waitForEvents(t *testing.T, p *platform, key, sessionID, typ string, n int) {
	t.Helper()
	sessions := avbv1connect.NewSessionServiceClient(http.DefaultClient, p.base, withKey(key))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		res, err := sessions.ListSessionEvents(context.Background(), connect.NewRequest(&avbv1.ListSessionEventsRequest{SessionId: sessionID, PageSize: 100}))
		if err == nil && len(slices.DeleteFunc(res.Msg.GetEvents(), func(e *avbv1.SessionEvent) bool { return e.GetType() != typ })) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s never recorded %d %s events (%v)", sessionID, n, typ, err)
		}
	}
}

// pct is the p-th percentile of ds.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)].Round(10 * time.Microsecond)
}

// instance is one `avb serve` child process of a cluster.
type instance struct {
	base  string
	voice avbv1connect.VoiceServiceClient // gRPC, with the tenant's realtime key
	kill  func()                          // SIGKILL
	term  func()                          // SIGTERM: drain
	logs  *testenv.LogBuffer
}

// cluster starts n `avb serve` processes on one Postgres, Redis, SpiceDB and
// Temporal (session workflows on, their worker in this process's platform),
// with a tenant and its realtime API key.
func cluster(t *testing.T, n int) (*platform, string, []instance) {
	t.Helper()
	temporal := testenv.Temporal(t)
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	env := identityEnv(t, owner, issuer.Issuer(), map[string]string{
		"AVB_TEMPORAL_ADDRESS": temporal, "AVB_SESSION_WORKFLOWS": "true", "AVB_SESSION_HEARTBEAT_TIMEOUT": "10s",
		"AVB_STREAM_DRAIN_TIMEOUT": "3s", "AVB_SHUTDOWN_TIMEOUT": "5s"})
	workerEnv := map[string]string{"AVB_RUN_WORKER": "true"}
	for k, v := range env {
		workerEnv[k] = v
	}
	p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), workerEnv), issuer, owner)
	env["AVB_TTS_WORKERS"] = "2" // the instances synthesize in worker processes, as in production
	ten := p.tenant("cluster", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_ADMIN","API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))["secret"].(string)
	bin := buildAvb(t)
	var out []instance
	for range n {
		srv, base, logs := startChildOf(t, bin, env)
		out = append(out, instance{base: base, logs: logs,
			voice: avbv1connect.NewVoiceServiceClient(h2c(), base, connect.WithGRPC(), withKey(key)),
			kill:  func() { _ = srv.Process.Kill() },
			term:  func() { _ = srv.Process.Signal(syscall.SIGTERM) }})
	}
	return p, key, out
}

// clusterLogs is every instance's log, for a failure.
func clusterLogs(instances []instance) string {
	var b strings.Builder
	for i, in := range instances {
		fmt.Fprintf(&b, "--- instance %d\n%s\n", i, in.logs.String())
	}
	return b.String()
}

// The TypeScript SDK's browser call outlives its instance: behind one base
// URL (a balancer in this test that sends every request to one instance,
// the next once the test drains or kills it), the holder drains, then the
// next is killed, and the call rejoins and is answered each time.
func TestTypeScriptCallMoves(t *testing.T) {
	root := builtWeb(t, "sdk/ts/dist-test/move.test.mjs")
	_, key, instances := cluster(t, 3)
	var current atomic.Int32
	proxies := make([]*httputil.ReverseProxy, len(instances))
	for i, in := range instances {
		u, _ := url.Parse(in.base)
		proxies[i] = httputil.NewSingleHostReverseProxy(u)
		proxies[i].FlushInterval = -1 // event streams flow as they come
	}
	balancer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/test/drain":
			current.Store(1)
			instances[0].term()
		case "/test/kill":
			current.Store(2)
			instances[1].kill()
		default:
			proxies[current.Load()].ServeHTTP(w, r)
		}
	}))
	defer func() {
		// A proxied event stream ends with its client; Close alone would
		// wait for it.
		balancer.CloseClientConnections()
		balancer.Close()
	}()
	pcm, _ := speechFiles(t)
	defer func() {
		if t.Failed() {
			t.Log(clusterLogs(instances))
		}
	}()
	runNodeTests(t, root, "sdk/ts/dist-test/move.test.mjs", map[string]string{
		"AVB_BASE_URL":   balancer.URL,
		"AVB_API_KEY":    key,
		"AVB_SPEECH_PCM": pcm,
		"AVB_ASK":        ask,
	})
}
