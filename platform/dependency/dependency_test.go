package dependency

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newGuard(t *testing.T, openFor time.Duration) (*Guard, *Set) {
	t.Helper()
	s := NewSet(Breaker{OpenFor: openFor, Failures: 3}, nil, prometheus.NewRegistry())
	return s.Guard("dep"), s
}

// A call that outlives its deadline ends at the deadline as *Error, opens
// the breaker at once, and the next calls fail without waiting; after the
// open window one probe goes through and a success closes the breaker.
func TestTimeoutOpensAtOnceThenProbeCloses(t *testing.T) {
	g, s := newGuard(t, 100*time.Millisecond)
	start := time.Now()
	err := g.Do(context.Background(), 50*time.Millisecond, func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if took := time.Since(start); took > 200*time.Millisecond {
		t.Fatalf("hung call took %v", took)
	}
	var derr *Error
	if !errors.As(err, &derr) || !errors.Is(err, ErrUnavailable) || derr.Dependency != "dep" {
		t.Fatalf("hung call: %v", err)
	}
	if g.State() != "open" || testutil.ToFloat64(s.state.WithLabelValues("dep")) != 2 {
		t.Fatalf("breaker %s after a timeout", g.State())
	}
	called := false
	start = time.Now()
	err = g.Do(context.Background(), time.Second, func(context.Context) error { called = true; return nil })
	if called || !errors.Is(err, ErrUnavailable) || time.Since(start) > 10*time.Millisecond {
		t.Fatalf("open breaker: called %v, %v", called, err)
	}
	time.Sleep(120 * time.Millisecond)
	if err := g.Do(context.Background(), time.Second, func(context.Context) error { return nil }); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if g.State() != "closed" {
		t.Fatalf("breaker %s after a good probe", g.State())
	}
}

// Refused connections open the breaker after Failures in a row; answers
// that are errors (not found, invalid) are the caller's and never do.
func TestRefusedCountsAnswersDoNot(t *testing.T) {
	g, _ := newGuard(t, time.Minute)
	notFound := errors.New("not found")
	for range 10 {
		if err := g.Do(context.Background(), time.Second, func(context.Context) error { return notFound }); err != notFound {
			t.Fatalf("an answer came back as %v", err)
		}
	}
	if g.State() != "closed" {
		t.Fatal("answers opened the breaker")
	}
	refused := &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}
	for i := range 3 {
		if err := g.Do(context.Background(), time.Second, func(context.Context) error { return refused }); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("refused call %d: %v", i, err)
		}
	}
	if !g.Open() {
		t.Fatalf("breaker %s after 3 refused calls", g.State())
	}
}

// A caller that gives up is no verdict on the dependency; readiness finding
// the dependency down opens the breaker.
func TestCallerCancelIsNoVerdictReadinessOpens(t *testing.T) {
	g, _ := newGuard(t, time.Minute)
	for range 5 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := g.Do(ctx, time.Second, func(ctx context.Context) error { return ctx.Err() })
		if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnavailable) {
			t.Fatalf("canceled call: %v", err)
		}
	}
	if g.State() != "closed" {
		t.Fatal("canceled calls opened the breaker")
	}
	g.Down()
	if !g.Open() {
		t.Fatal("Down did not open the breaker")
	}
}

// An HTTP dependency: no headers within the first deadline, or a stream that
// stalls between chunks, ends as *Error; 5xx answers count as failures.
func TestTransportDeadlines(t *testing.T) {
	stall := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			select {
			case <-stall:
			case <-r.Context().Done():
			}
		case "/stall":
			_, _ = w.Write([]byte("data: first\n\n"))
			w.(http.Flusher).Flush()
			select {
			case <-stall:
			case <-r.Context().Done():
			}
		case "/broken":
			w.WriteHeader(http.StatusBadGateway)
		}
	}))
	defer ts.Close()
	defer close(stall)
	g, _ := newGuard(t, time.Minute)
	c := &http.Client{Transport: g.Transport(nil, 100*time.Millisecond, 100*time.Millisecond)}

	start := time.Now()
	_, err := c.Get(ts.URL + "/slow")
	if !errors.Is(err, ErrUnavailable) || time.Since(start) > time.Second {
		t.Fatalf("no headers: %v after %v", err, time.Since(start))
	}

	g2, _ := newGuard(t, time.Minute)
	c = &http.Client{Transport: g2.Transport(nil, time.Second, 100*time.Millisecond)}
	res, err := c.Get(ts.URL + "/stall")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_, err = res.Body.Read(buf)
	for err == nil {
		_, err = res.Body.Read(buf)
	}
	res.Body.Close()
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("stalled stream: %v", err)
	}

	// Refused: nothing listens.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	g4, _ := newGuard(t, time.Minute)
	c = &http.Client{Transport: g4.Transport(nil, time.Second, time.Second)}
	for range 3 {
		start := time.Now()
		if _, err := c.Get(closed); !errors.Is(err, ErrUnavailable) || time.Since(start) > time.Second {
			t.Fatalf("refused: %v after %v", err, time.Since(start))
		}
	}
	if !g4.Open() {
		t.Fatalf("breaker %s after three refused connections", g4.State())
	}

	g3, _ := newGuard(t, time.Minute)
	c = &http.Client{Transport: g3.Transport(nil, time.Second, time.Second)}
	for range 3 {
		res, err := c.Get(ts.URL + "/broken")
		if err != nil || res.StatusCode != http.StatusBadGateway {
			t.Fatalf("5xx: %v", err)
		}
		res.Body.Close()
	}
	if !g3.Open() {
		t.Fatalf("breaker %s after three 502s", g3.State())
	}
}

// The cost of a guarded call against the bare call, in the same run.
func BenchmarkGuard(b *testing.B) {
	work := func(context.Context) error { return nil }
	b.Run("bare", func(b *testing.B) {
		ctx := context.Background()
		for b.Loop() {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			_ = work(cctx)
			cancel()
		}
	})
	b.Run("guarded", func(b *testing.B) {
		g := NewSet(Breaker{}, nil, nil).Guard("bench")
		ctx := context.Background()
		for b.Loop() {
			_ = g.Do(ctx, time.Second, work)
		}
	})
}

// A call the guarded call makes itself (a client initializing the
// connection it dials) is decided by the outer call: the one probe of a
// half-open breaker is not refused by itself.
func TestNestedCallIsTheOuterCall(t *testing.T) {
	g, _ := newGuard(t, 50*time.Millisecond)
	g.Down()
	time.Sleep(60 * time.Millisecond) // half-open: one probe may pass
	err := g.Do(context.Background(), time.Second, func(ctx context.Context) error {
		return g.Do(ctx, time.Second, func(context.Context) error { return nil })
	})
	if err != nil || g.State() != "closed" {
		t.Fatalf("probe with a nested call: %v, breaker %s", err, g.State())
	}
}
