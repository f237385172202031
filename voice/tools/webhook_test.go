package tools

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/platform/egress"
	"github.com/agentvoicebox/avb/platform/signature"
)

// loopbackWebhooks calls test servers on loopback (allowed as in
// development), failing the test if a refused address is ever dialed.
func loopbackWebhooks(t *testing.T, resolve map[string]string) *Webhooks {
	g := &egress.Guard{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	g.Resolve = func(_ context.Context, host string) ([]netip.Addr, error) {
		if a, ok := resolve[host]; ok {
			return []netip.Addr{netip.MustParseAddr(a)}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	g.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		if g.Refused(netip.MustParseAddr(host)) {
			t.Fatalf("dialed refused address %s", addr)
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	w := NewWebhooks(g, false, nil)
	w.Backoff = []time.Duration{10 * time.Millisecond, 10 * time.Millisecond}
	return w
}

func call(w *Webhooks, url string, idempotent bool, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return w.Call(ctx, Tool{Name: "book_meeting", Kind: Webhook, URL: url, Idempotent: idempotent}, []string{"whsec_new", "whsec_old"},
		WebhookCall{SessionID: "s1", CallID: "call_1", Arguments: json.RawMessage(`{"day":"tomorrow"}`)})
}

// The call is the documented JSON, signed with every secret in use, and
// the answer is the result.
func TestWebhookCallIsSigned(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body [4096]byte
		n, _ := r.Body.Read(body[:])
		for _, s := range []string{"whsec_new", "whsec_old"} {
			v := signature.Verifier{Secret: s}
			if err := v.Verify(r.Header.Get(signature.Header), body[:n]); err != nil {
				http.Error(w, s+": "+err.Error(), http.StatusUnauthorized)
				return
			}
		}
		var c WebhookCall
		if json.Unmarshal(body[:n], &c) != nil || c.Type != "tool_call" || c.Name != "book_meeting" || c.CallID != "call_1" ||
			c.SessionID != "s1" || string(c.Arguments) != `{"day":"tomorrow"}` || r.Header.Get("Idempotency-Key") != "call_1" {
			http.Error(w, "unexpected "+string(body[:n]), http.StatusBadRequest)
			return
		}
		_, _ = w.Write([]byte(` {"say":"ok"} `))
	}))
	defer srv.Close()
	out, err := call(loopbackWebhooks(t, nil), srv.URL, false, 2*time.Second)
	if err != nil || out != `{"say":"ok"}` {
		t.Fatalf("%q %v", out, err)
	}
}

// Retries only for idempotent tools, and only after failures worth one
// (a 5xx, a 429, no connection), not after a 4xx.
func TestWebhookRetries(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n := hits.Add(1); {
		case strings.HasSuffix(r.URL.Path, "/bad"):
			http.Error(w, "bad arguments", http.StatusUnprocessableEntity)
		case n%2 == 1:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		default:
			_, _ = w.Write([]byte("done"))
		}
	}))
	defer srv.Close()
	w := loopbackWebhooks(t, nil)
	if out, err := call(w, srv.URL, true, 2*time.Second); err != nil || out != "done" || hits.Load() != 2 {
		t.Fatalf("idempotent: %q %v after %d attempts", out, err, hits.Load())
	}
	hits.Store(0)
	if _, err := call(w, srv.URL, false, 2*time.Second); err == nil || hits.Load() != 1 {
		t.Fatalf("not idempotent: %v after %d attempts", err, hits.Load())
	}
	hits.Store(0)
	if _, err := call(w, srv.URL+"/bad", true, 2*time.Second); err == nil || !strings.Contains(err.Error(), "422: bad arguments") || hits.Load() != 1 {
		t.Fatalf("4xx: %v after %d attempts", err, hits.Load())
	}
}

// A tool server that is down (refused) or hung fails within the tool's
// deadline; an answer over the cap is an error, not a truncated result.
func TestWebhookFailuresAreBounded(t *testing.T) {
	w := loopbackWebhooks(t, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + l.Addr().String()
	l.Close()
	start := time.Now()
	if _, err := call(w, refused, true, 2*time.Second); err == nil || time.Since(start) > time.Second {
		t.Fatalf("refused: %v after %s", err, time.Since(start))
	}
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // then the server notices the client leave
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	defer hung.Close()
	start = time.Now()
	if _, err := call(w, hung.URL, true, 300*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("hung: %v after %s", err, time.Since(start))
	}
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("x", MaxResponse+1)))
	}))
	defer big.Close()
	if _, err := call(w, big.URL, false, 2*time.Second); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("over the cap: %v", err)
	}
}

// URLs that name or resolve to refused addresses, or redirect to one, are
// refused before any connection to them is attempted (the dialer fails
// the test if it is asked to).
func TestWebhookSSRF(t *testing.T) {
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
	}))
	defer redirect.Close()
	w := loopbackWebhooks(t, map[string]string{"internal.example": "10.0.0.7", "metadata.example": "169.254.169.254"})
	for _, u := range []string{"http://internal.example/hook", "http://metadata.example/", "http://192.168.0.1/", "http://[fd00::1]/",
		redirect.URL, "file:///etc/passwd", "http://user:pw@example.com/"} {
		if _, err := call(w, u, true, 2*time.Second); !errors.Is(err, egress.ErrRefused) {
			t.Errorf("%s: %v, want refused", u, err)
		}
	}
	w.RequireHTTPS = true
	if _, err := call(w, "http://example.com/", false, time.Second); !errors.Is(err, egress.ErrRefused) {
		t.Errorf("http under RequireHTTPS: %v", err)
	}
}
