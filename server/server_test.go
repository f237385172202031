package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"github.com/prometheus/client_golang/prometheus"
	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/apierror"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/platform/metrics"
	"github.com/agentvoicebox/avb/server"
	"github.com/agentvoicebox/avb/server/middleware"
)

// slowSystem is a SystemService whose GetServerInfo waits, panics or fails
// on demand, to exercise shutdown and error handling.
type slowSystem struct {
	avbv1connect.SystemServiceHandler
	delay   time.Duration
	started chan struct{}
	panics  bool
	fails   error
	// failure, when set, is how every call fails (property tests change it).
	failure atomic.Pointer[failure]
}

type failure struct {
	panics bool
	text   string
	err    error
}

func (s *slowSystem) GetServerInfo(ctx context.Context, req *connect.Request[avbv1.GetServerInfoRequest]) (*connect.Response[avbv1.GetServerInfoResponse], error) {
	if s.started != nil {
		close(s.started)
	}
	if s.panics {
		panic("secret internal detail")
	}
	if f := s.failure.Load(); f != nil {
		if f.panics {
			panic(f.text)
		}
		return nil, f.err
	}
	if s.fails != nil {
		return nil, s.fails
	}
	time.Sleep(s.delay)
	return s.SystemServiceHandler.GetServerInfo(ctx, req)
}

type harness struct {
	srv     *server.Server
	url     string
	metrics *metrics.Metrics
	reg     *prometheus.Registry
	done    chan error
	cancel  context.CancelFunc
}

func testHTTPConfig() config.HTTP {
	return config.HTTP{
		ReadHeaderTimeout:  5 * time.Second,
		MaxRequestBytes:    1 << 20,
		ShutdownTimeout:    5 * time.Second,
		StreamDrainTimeout: time.Second,
		CORSAllowedOrigins: []string{"https://app.example.com"},
	}
}

// start serves impl on a free port until ctx is done.
func start(t *testing.T, ctx context.Context, impl avbv1connect.SystemServiceHandler, deps ...server.Dependency) *harness {
	t.Helper()
	return startWith(t, ctx, testHTTPConfig(), impl, deps...)
}

// startWith is start with an HTTP configuration.
func startWith(t *testing.T, ctx context.Context, cfg config.HTTP, impl avbv1connect.SystemServiceHandler, deps ...server.Dependency) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := server.New(server.Options{
		HTTP: cfg, Logger: log, Metrics: m, Gatherer: reg,
		Readiness: server.NewReadiness(deps, time.Second, log, m),
	})
	srv.Handle(avbv1connect.NewSystemServiceHandler(impl, srv.HandlerOptions()...))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	h := &harness{srv: srv, url: "http://" + ln.Addr().String(), metrics: m, reg: reg, done: make(chan error, 1), cancel: cancel}
	go func() { h.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(10 * time.Second):
			t.Error("server did not stop")
		}
	})
	return h
}

// h2cClient speaks HTTP/2 without TLS, as gRPC clients do.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

func TestServesConnectGRPCAndGRPCWeb(t *testing.T) {
	t.Parallel()
	h := start(t, t.Context(), server.NewSystemServer("v-test", "test", nil))
	clients := map[string]avbv1connect.SystemServiceClient{
		"connect+json over HTTP/1.1": avbv1connect.NewSystemServiceClient(http.DefaultClient, h.url, connect.WithProtoJSON()),
		"connect+proto over h2c":     avbv1connect.NewSystemServiceClient(h2cClient(), h.url),
		"grpc over h2c":              avbv1connect.NewSystemServiceClient(h2cClient(), h.url, connect.WithGRPC()),
		"grpc-web over HTTP/1.1":     avbv1connect.NewSystemServiceClient(http.DefaultClient, h.url, connect.WithGRPCWeb()),
	}
	for name, c := range clients {
		t.Run(name, func(t *testing.T) {
			res, err := c.GetServerInfo(t.Context(), connect.NewRequest(&avbv1.GetServerInfoRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			if res.Msg.GetVersion() != "v-test" || res.Msg.GetApiVersion() != "avb.v1" || res.Msg.GetServerTime() == nil {
				t.Fatalf("unexpected response %v", res.Msg)
			}
			if !SaneID(res.Header().Get(middleware.RequestIDHeader)) {
				t.Fatalf("no request id on the response: %v", res.Header())
			}
		})
	}
}

func SaneID(id string) bool { return middleware.SaneRequestID(id) }

// A plain curl-style JSON POST works too.
func TestConnectJSONWithPlainHTTP(t *testing.T) {
	t.Parallel()
	h := start(t, t.Context(), server.NewSystemServer("v-test", "test", nil))
	res, err := http.Post(h.url+"/avb.v1.SystemService/GetServerInfo", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || !strings.Contains(string(body), `"apiVersion":"avb.v1"`) {
		t.Fatalf("status %d body %s", res.StatusCode, body)
	}
}

// Property 15: every response carries an X-Request-ID; a sane supplied one is
// echoed; an oversized or malformed one is replaced with a fresh one; fresh
// ones never repeat.
func TestPropertyRequestID(t *testing.T) {
	t.Parallel()
	h := start(t, t.Context(), server.NewSystemServer("v", "test", nil))
	seen := map[string]bool{}
	rapid.Check(t, func(rt *rapid.T) {
		supplied := rapid.OneOf(
			rapid.StringMatching(`[A-Za-z0-9._:-]{1,128}`),
			rapid.StringMatching(`[A-Za-z0-9._:-]{129,300}`),
			rapid.StringMatching(`[ -~]{0,40}`),
			rapid.Just(""),
		).Draw(rt, "supplied")
		req, _ := http.NewRequest(http.MethodGet, h.url+"/health/", nil)
		if supplied != "" {
			req.Header.Set(middleware.RequestIDHeader, supplied)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			rt.Fatal(err)
		}
		res.Body.Close()
		got := res.Header.Get(middleware.RequestIDHeader)
		if !middleware.SaneRequestID(got) {
			rt.Fatalf("response id %q is not sane", got)
		}
		// Header values are trimmed in transit; what the server saw is what counts.
		sent := strings.TrimSpace(supplied)
		if middleware.SaneRequestID(sent) {
			if got != sent {
				rt.Fatalf("sane id %q not echoed, got %q", sent, got)
			}
			return
		}
		if got == sent {
			rt.Fatalf("malformed id %q echoed", sent)
		}
		if seen[got] {
			rt.Fatalf("generated id %q repeated", got)
		}
		seen[got] = true
	})
}

// An in-flight unary call completes when the process receives SIGTERM; new
// connections are refused afterwards.
func TestGracefulShutdownOnSIGTERM(t *testing.T) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	impl := &slowSystem{SystemServiceHandler: server.NewSystemServer("v", "test", nil), delay: 700 * time.Millisecond, started: make(chan struct{})}
	h := start(t, ctx, impl)
	client := avbv1connect.NewSystemServiceClient(h2cClient(), h.url, connect.WithGRPC())

	type result struct {
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		_, err := client.GetServerInfo(context.Background(), connect.NewRequest(&avbv1.GetServerInfoRequest{}))
		done <- result{err, time.Now()}
	}()
	<-impl.started
	signalled := time.Now()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("in-flight call failed during shutdown: %v", r.err)
	}
	if r.at.Before(signalled) {
		t.Fatal("call finished before the signal; the test proves nothing")
	}
	if err := <-h.done; err != nil {
		t.Fatalf("Serve returned %v after a graceful shutdown", err)
	}
	h.done <- nil // for Cleanup
	if _, err := http.Get(h.url + "/health/"); err == nil {
		t.Fatal("server still accepts connections after shutdown")
	}
}

func TestPanicsAndUnexpectedErrorsRevealNothing(t *testing.T) {
	t.Parallel()
	for name, impl := range map[string]*slowSystem{
		"panic":       {SystemServiceHandler: server.NewSystemServer("v", "test", nil), panics: true},
		"plain error": {SystemServiceHandler: server.NewSystemServer("v", "test", nil), fails: errors.New("pq: secret internal detail")},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := start(t, t.Context(), impl)
			client := avbv1connect.NewSystemServiceClient(http.DefaultClient, h.url)
			_, err := client.GetServerInfo(t.Context(), connect.NewRequest(&avbv1.GetServerInfoRequest{}))
			if connect.CodeOf(err) != connect.CodeInternal || apierror.Reason(err) != "internal" {
				t.Fatalf("want internal/internal, got %v (reason %q)", err, apierror.Reason(err))
			}
			if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "goroutine") {
				t.Fatalf("internals leaked: %v", err)
			}
			if apierror.Info(err).GetMetadata()["request_id"] == "" {
				t.Fatal("internal error does not carry the request id")
			}
		})
	}
}

// internals are what a failure's own text may hold; none may reach a
// client of a production server.
var internals = []string{
	"SELECT id FROM tenants WHERE slug = $1", "ERROR: relation \"x\" does not exist (SQLSTATE 42P01)",
	"/src/avb/store/tenant.go:42", "*store.Tenant", "goroutine 7 [running]:\nmain.main()",
	"dial tcp 10.0.0.3:5432: connect: connection refused", "redis: connection pool timeout",
	"rpc error: code = Unknown desc = spicedb: schema", "unexpected EOF reading HTTP/1.1 response from 10.1.1.1:443",
}

// Property 17: whatever a handler's failure says (a panic, a driver's or
// dependency's error, wrapped or plain), a production server answers
// internal with the generic message and the request id, and nothing of the
// failure's text; a development server (AVB_EXPOSE_INTERNAL_ERRORS) gives
// the developer the cause.
func TestPropertyInternalFailuresRevealNothing(t *testing.T) {
	t.Parallel()
	for _, expose := range []bool{false, true} {
		impl := &slowSystem{SystemServiceHandler: server.NewSystemServer("v", "test", nil)}
		cfg := testHTTPConfig()
		cfg.ExposeErrorInternal = expose
		h := startWith(t, t.Context(), cfg, impl)
		rapid.Check(t, func(rt *rapid.T) {
			internal := rapid.SampledFrom(internals).Draw(rt, "internal")
			marker := rapid.StringMatching(`secret[a-z]{8}`).Draw(rt, "marker")
			text := internal + " " + marker
			f := &failure{}
			switch rapid.IntRange(0, 3).Draw(rt, "how") {
			case 0:
				f.panics, f.text = true, text
			case 1:
				f.err = errors.New(text)
			case 2:
				f.err = fmt.Errorf("load tenant: %w", errors.New(text))
			case 3:
				f.err = connect.NewError(rapid.SampledFrom([]connect.Code{connect.CodeInternal, connect.CodeUnknown, connect.CodeDataLoss}).Draw(rt, "code"), errors.New(text))
			}
			impl.failure.Store(f)
			res, err := http.Post(h.url+"/avb.v1.SystemService/GetServerInfo", "application/json", strings.NewReader("{}"))
			if err != nil {
				rt.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			id := res.Header.Get(middleware.RequestIDHeader)
			if res.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), `"code":"internal"`) || !strings.Contains(string(body), id) {
				rt.Fatalf("answer %d %s (request id %s)", res.StatusCode, body, id)
			}
			leaked := strings.Contains(string(body), marker) || strings.Contains(string(body), internal)
			if leaked != expose && !(expose && f.panics) {
				rt.Fatalf("expose=%v: the failure %q; the answer %s", expose, text, body)
			}
			if !expose && (strings.Contains(string(body), "goroutine") || strings.Contains(string(body), ".go:")) {
				rt.Fatalf("internals in %s", body)
			}
		})
		impl.failure.Store(nil)
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	h := start(t, t.Context(), server.NewSystemServer("v", "test", nil))
	preflight := func(origin string) *http.Response {
		req, _ := http.NewRequest(http.MethodOptions, h.url+"/avb.v1.SystemService/GetServerInfo", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type,connect-protocol-version,authorization")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	ok := preflight("https://app.example.com")
	if ok.StatusCode != http.StatusNoContent || ok.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		!strings.Contains(ok.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("allowed origin preflight: %d %v", ok.StatusCode, ok.Header)
	}
	if bad := preflight("https://evil.example"); bad.StatusCode != http.StatusForbidden || bad.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("foreign origin preflight: %d %v", bad.StatusCode, bad.Header)
	}
	req, _ := http.NewRequest(http.MethodPost, h.url+"/avb.v1.SystemService/GetServerInfo", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", "https://app.example.com")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if !strings.Contains(res.Header.Get("Access-Control-Expose-Headers"), "Grpc-Status-Details-Bin") ||
		!strings.Contains(res.Header.Get("Access-Control-Expose-Headers"), middleware.RequestIDHeader) {
		t.Fatalf("browser cannot read error details: %v", res.Header)
	}
	for _, hdr := range []string{"X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy", "Content-Security-Policy"} {
		if res.Header.Get(hdr) == "" {
			t.Errorf("security header %s missing", hdr)
		}
	}
}

func TestReflectionListsServices(t *testing.T) {
	t.Parallel()
	h := start(t, t.Context(), server.NewSystemServer("v", "test", nil))
	stream := grpcreflect.NewClient(h2cClient(), h.url).NewStream(t.Context())
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range names {
		got = append(got, string(n))
	}
	if !strings.Contains(strings.Join(got, ","), avbv1connect.SystemServiceName) {
		t.Fatalf("reflection lists %v", got)
	}
}

func TestHealthReadinessAndMetrics(t *testing.T) {
	t.Parallel()
	var up atomic.Bool
	up.Store(true)
	dep := server.Dependency{Name: "flaky", Required: true, Probe: func(context.Context) error {
		if up.Load() {
			return nil
		}
		return errors.New("down")
	}}
	h := start(t, t.Context(), server.NewSystemServer("v", "test", nil), dep)
	get := func(path string) (int, string) {
		res, err := http.Get(h.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get("/health/"); code != 200 || !strings.Contains(body, "alive") {
		t.Fatalf("liveness: %d %s", code, body)
	}
	if code, body := get("/health/ready/"); code != 200 || !strings.Contains(body, `"flaky":{"status":"up"`) {
		t.Fatalf("readiness up: %d %s", code, body)
	}
	up.Store(false)
	time.Sleep(300 * time.Millisecond) // past the reuse window
	if code, body := get("/health/ready/"); code != 503 || !strings.Contains(body, `"flaky":{"status":"down"`) {
		t.Fatalf("readiness down: %d %s", code, body)
	}
	code, body := get("/metrics")
	if code != 200 || !strings.Contains(body, `http_requests_total{code="200",method="GET",route="/health/"}`) ||
		!strings.Contains(body, `dependency_up{dependency="flaky"} 0`) {
		t.Fatalf("metrics: %d\n%s", code, body)
	}
	if code, _ := get("/no/such/path"); code != 404 {
		t.Fatalf("unknown path: %d", code)
	}
	_, body = get("/metrics")
	if !strings.Contains(body, `route="other"`) || strings.Contains(body, "/no/such/path") {
		t.Fatal("unknown paths must share one metrics label")
	}
}
