package app_test

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

// chaosCall is what a client saw of one call.
type chaosCall struct {
	session   uuid.UUID
	tokensIn  int64
	tokensOut int64
	clean     bool // every turn done and the stream closed without error
}

// chaosCallOnce runs one real-time call of one turn, as a client would,
// and records what it saw. Failures are expected (faults are on); hangs are
// not: the call is abandoned after 20 s and reported.
func chaosCallOnce(client avbv1connect.VoiceServiceClient, utter []byte) (chaosCall, error) {
	var c chaosCall
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream := client.Converse(ctx)
	if err := stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Start{Start: &avbv1.SessionStart{Config: callConfig}}}); err != nil {
		if errors.Is(err, io.EOF) {
			// The server answered already: its error is what Receive returns.
			_, err = stream.Receive()
		}
		return c, err
	}
	go func() {
		for i := 0; i < len(utter); i += 640 {
			if stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Audio{Audio: &avbv1.AudioAppend{Audio: utter[i:min(i+640, len(utter))]}}}) != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	for {
		msg, err := stream.Receive()
		if err != nil {
			return c, err
		}
		switch ev := msg.GetEvent().GetEvent().(type) {
		case *avbv1.VoiceEvent_SessionStarted:
			c.session = uuid.MustParse(ev.SessionStarted.GetSession().GetId())
		case *avbv1.VoiceEvent_ResponseDone:
			c.tokensIn += ev.ResponseDone.GetInputTokens()
			c.tokensOut += ev.ResponseDone.GetOutputTokens()
			_ = stream.CloseRequest()
			for {
				if _, err := stream.Receive(); err != nil {
					if errors.Is(err, io.EOF) {
						c.clean = true
						return c, nil
					}
					return c, err
				}
			}
		case *avbv1.VoiceEvent_Error:
			_ = stream.CloseRequest()
		}
	}
}

// A chaos run: real-time calls and unary traffic while faults come and go
// at random on every dependency. Afterwards nothing is stuck or lost:
// goroutines are back to their baseline, no call is open, every session is
// final, and the usage ledger holds what the clients were told. Its length
// is AVB_CHAOS_DURATION (default 12s; make chaos runs 60s). It does not run
// in parallel with other tests, so the goroutine count is its own.
func TestChaos(t *testing.T) {
	duration := 12 * time.Second
	if d, err := time.ParseDuration(os.Getenv("AVB_CHAOS_DURATION")); err == nil {
		duration = d
	}
	p, l := faultPlatform(t, map[string]string{"AVB_SESSION_IDLE_TIMEOUT": "20s", "AVB_SESSION_HEARTBEAT_TIMEOUT": "6s"})
	ten := p.tenant("chaos", store.TierEnterprise)
	admin := p.token("ada", ten.ID.String(), "admin")
	key, keyID := p.realtimeKey(ten)
	var attempts atomic.Int64 // requests made with the key
	h := h2c()
	client := avbv1connect.NewVoiceServiceClient(h, p.base, connect.WithGRPC(), withKey(key))
	utter := spoken(t, ask, 800)
	// Warm up (first call loads the speech models), then take the baseline.
	attempts.Add(1)
	if _, err := chaosCallOnce(client, utter); err != nil {
		t.Fatalf("warm-up call: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	baseline := runtime.NumGoroutine()

	ctx, stop := context.WithTimeout(context.Background(), duration)
	defer stop()
	var (
		mu      sync.Mutex
		calls   []chaosCall
		failed  = map[string]int{}
		slowest time.Duration
		wg      sync.WaitGroup
	)
	for range 2 { // callers
		wg.Go(func() {
			for ctx.Err() == nil {
				attempts.Add(1)
				c, err := chaosCallOnce(client, utter)
				mu.Lock()
				if c.session != uuid.Nil {
					calls = append(calls, c)
				}
				if err != nil {
					failed[connect.CodeOf(err).String()]++
					if connect.CodeOf(err) == connect.CodeUnknown || connect.CodeOf(err) == connect.CodeInternal {
						t.Errorf("a call failed without a documented error: %v", err)
					}
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(200 * time.Millisecond) // a client backs off before it retries
				}
			}
		})
	}
	wg.Go(func() { // unary traffic
		for ctx.Err() == nil {
			for _, proc := range []string{"/avb.v1.ProjectService/ListProjects", "/avb.v1.SessionService/ListSessions", "/avb.v1.UserService/GetMe"} {
				r, took := p.timedCall(proc, "{}", bearer(admin)...)
				mu.Lock()
				slowest = max(slowest, took)
				if r.status != http.StatusOK {
					failed[r.code+"/"+r.reason]++
				}
				mu.Unlock()
				if r.status != http.StatusOK && r.code != "unavailable" && r.code != "deadline_exceeded" {
					t.Errorf("%s during chaos: %d %s/%s", proc, r.status, r.code, r.reason)
				}
				if r.status != http.StatusOK {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}
	})
	deps := []string{"postgres", "redis", "spicedb", "temporal", "oidc"}
	injected := 0
	var faulty []string    // at most two dependencies misbehave at once
	for ctx.Err() == nil { // the chaos
		if len(faulty) == 2 || (len(faulty) > 0 && rand.IntN(2) == 0) {
			l.of(faulty[0]).Heal()
			faulty = faulty[1:]
		} else {
			dep := deps[rand.IntN(len(deps))]
			l.of(dep).Inject(testenv.Faults[rand.IntN(len(testenv.Faults))], 1000+rand.IntN(2000))
			faulty = append(faulty, dep)
			injected++
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(500+rand.IntN(1500)) * time.Millisecond):
		}
	}
	l.healAll()
	wg.Wait()
	t.Logf("chaos: %d faults injected in %v, %d calls opened, failures by code %v, slowest unary %v", injected, duration, len(calls), failed, slowest)
	if slowest > 5*time.Second {
		t.Errorf("a unary call took %v during chaos", slowest)
	}

	// Everything recovers without a restart.
	eventuallyOK(t, p, "after chaos", "/avb.v1.ProjectService/ListProjects", "{}", bearer(admin)...)
	for attempt := 1; ; attempt++ {
		attempts.Add(1)
		c, err := chaosCallOnce(client, utter)
		if c.session != uuid.Nil {
			calls = append(calls, c)
		}
		if err == nil {
			break
		}
		if attempt == 20 {
			states := map[string]string{}
			for name, g := range p.app.Dependencies().Guards() {
				states[name] = g.State()
			}
			rc := redis.NewClient(&redis.Options{Addr: l.redis.Addr()})
			perr := rc.Ping(context.Background()).Err()
			rc.Close()
			time.Sleep(time.Second)
			aerr := p.app.Redis().Ping(context.Background()).Err()
			t.Fatalf("calls after chaos keep failing: %v; breakers %v; redis through the link: %v; the app's redis probe: %v", err, states, perr, aerr)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// Every session reaches a final state; nothing waits for Temporal.
	tctx := tenancy.With(context.Background(), ten.ID)
	deadline := time.Now().Add(60 * time.Second)
	for {
		open, _, err := p.app.DB().Sessions().List(tctx, store.SessionFilter{Status: store.SessionActive}, 100, "")
		created, _, err2 := p.app.DB().Sessions().List(tctx, store.SessionFilter{Status: store.SessionCreated}, 100, "")
		if err == nil && err2 == nil && len(open)+len(created) == 0 && p.app.Reporter().Pending() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after chaos: %d sessions active, %d created, %d reports pending (%v %v)", len(open), len(created), p.app.Reporter().Pending(), err, err2)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := testutil.ToFloat64(p.app.Metrics.ActiveSessions); n != 0 {
		t.Errorf("%v calls still open", n)
	}
	if n := p.app.Reporter().Dropped(); n != 0 {
		t.Errorf("%d workflow reports dropped", n)
	}
	// The ledger holds what the clients were told. The session's workflow
	// writes it after the call's end (retrying through what is left of
	// the chaos), so it may come a little after the final status.
	for _, c := range calls {
		var s *store.Session
		ledger := map[string]float64{}
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			var err error
			if s, err = p.app.DB().Sessions().Get(tctx, c.session); err != nil {
				t.Fatal(err)
			}
			entries, err := p.app.DB().Sessions().Usage(tctx, c.session)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				ledger[e.Kind] = e.Quantity
			}
			if len(entries) > 0 || time.Now().After(deadline) {
				break
			}
		}
		if ledger["session"] != 1 || int64(ledger["input_tokens"]) != s.InputTokens || int64(ledger["output_tokens"]) != s.OutputTokens {
			t.Errorf("session %s (%s): ledger %v, session row %d/%d tokens", c.session, s.Status, ledger, s.InputTokens, s.OutputTokens)
		}
		if c.clean && (s.InputTokens != c.tokensIn || s.OutputTokens != c.tokensOut) {
			t.Errorf("session %s: the client was told %d/%d tokens, the database has %d/%d", c.session, c.tokensIn, c.tokensOut, s.InputTokens, s.OutputTokens)
		}
	}
	// The key's usage count lost nothing: every call that opened was
	// counted, and nothing that was not made.
	var counted int64
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if err := ownerDB(t, p.owner).QueryRow(context.Background(), "SELECT usage_count FROM api_keys WHERE id = $1", keyID).Scan(&counted); err != nil {
			t.Fatal(err)
		}
		if counted >= int64(len(calls)) && counted <= attempts.Load() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("key usage count %d: %d calls opened, %d made", counted, len(calls), attempts.Load())
		}
	}
	t.Logf("key usage: %d counted, %d calls opened, %d made", counted, len(calls), attempts.Load())
	// No goroutine is left behind.
	h.CloseIdleConnections()
	deadline = time.Now().Add(30 * time.Second)
	for runtime.NumGoroutine() > baseline+30 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, baseline %d\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("goroutines after chaos: %d (baseline %d)", runtime.NumGoroutine(), baseline)
}
