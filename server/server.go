// Package server serves the API: Connect, gRPC and gRPC-Web on one port
// (HTTP/1.1 and HTTP/2, cleartext or TLS), with the health, readiness and
// metrics endpoints beside them, and shuts down gracefully.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/vanguard"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/platform/metrics"
	"github.com/agentvoicebox/avb/server/middleware"
)

// Options are the server's dependencies.
type Options struct {
	HTTP      config.HTTP
	Logger    *slog.Logger
	Metrics   *metrics.Metrics
	Gatherer  prometheus.Gatherer
	Readiness *Readiness
	// Interceptors run inside the built-in ones (after logging, error mapping
	// and draining), in order: authentication, tenancy, rate limits, authz...
	Interceptors []connect.Interceptor
	// GetCertificate, when set, serves HTTPS with the certificate it
	// returns at each handshake (one issued by Vault and renewed), instead
	// of HTTP.TLSCertFile.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// TLS reports whether the server serves HTTPS itself.
func (s *Server) TLS() bool { return s.opts.GetCertificate != nil || s.opts.HTTP.TLSCertFile != "" }

// Server is the API server. Mount services with Handle, then Serve.
type Server struct {
	opts     Options
	mux      *http.ServeMux
	services []string
	routes   map[string]bool
	// rest are the services, for the REST routes of their google.api.http
	// annotations (served under /api/v2/ by a vanguard transcoder).
	rest     []*vanguard.Service
	drainCtx context.Context
	drain    context.CancelFunc
}

// New returns a Server with the health, readiness and metrics endpoints.
func New(opts Options) *Server {
	drainCtx, drain := context.WithCancel(context.Background())
	s := &Server{
		opts:     opts,
		mux:      http.NewServeMux(),
		routes:   map[string]bool{},
		drainCtx: drainCtx,
		drain:    drain,
	}
	s.handlePlain("GET /health/", http.HandlerFunc(live))
	s.handlePlain("GET /health/ready/", opts.Readiness)
	s.handlePlain("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	return s
}

func live(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(`{"status":"alive"}` + "\n"))
}

func (s *Server) handlePlain(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
	_, path, _ := strings.Cut(pattern, " ")
	s.routes[path] = true
}

// HandlerOptions are the options every Connect handler is built with: the
// built-in interceptors, Options.Interceptors, panic recovery and size limits.
func (s *Server) HandlerOptions() []connect.HandlerOption {
	interceptors := append([]connect.Interceptor{
		middleware.Observe(s.opts.Logger, s.opts.Metrics),
		middleware.Errors(s.opts.Logger, s.opts.HTTP.ExposeErrorInternal),
		middleware.Drain(s.drainCtx),
	}, s.opts.Interceptors...)
	return []connect.HandlerOption{
		connect.WithInterceptors(interceptors...),
		middleware.Recover(s.opts.Logger),
		connect.WithReadMaxBytes(s.opts.HTTP.MaxRequestBytes),
		connect.WithCompressMinBytes(1024),
	}
}

// RESTPrefix is where the REST routes of the contract live.
const RESTPrefix = "/api/v2/"

// Handle mounts a generated Connect service handler, as returned by
// avbv1connect.NewXServiceHandler(impl, s.HandlerOptions()...).
func (s *Server) Handle(path string, h http.Handler) {
	name := strings.Trim(path, "/")
	s.services = append(s.services, name)
	s.mux.Handle(path, h)
	s.rest = append(s.rest, vanguard.NewService(path, h))
	if d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name)); err == nil {
		if sd, ok := d.(protoreflect.ServiceDescriptor); ok {
			for i := range sd.Methods().Len() {
				s.routes[path+string(sd.Methods().Get(i).Name())] = true
			}
		}
	}
}

// HandleHTTP mounts a plain HTTP handler under prefix (for example the
// development OIDC issuer). It gets the HTTP middleware, not the interceptors.
func (s *Server) HandleHTTP(prefix string, h http.Handler) {
	s.mux.Handle(prefix, h)
	s.routes[prefix] = true
}

// Services returns the fully-qualified names of the mounted services.
func (s *Server) Services() []string { return append([]string(nil), s.services...) }

// Handler returns the complete HTTP handler: health and reflection mounted,
// wrapped in the HTTP middleware.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", s.mux)
	mux.Handle(grpchealth.NewHandler(&healthChecker{readiness: s.opts.Readiness, services: s.services}))
	reflector := grpcreflect.NewStaticReflector(append(s.Services(), grpchealth.HealthV1ServiceName)...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	if len(s.rest) > 0 {
		// REST requests become Connect calls of the same handlers, so they
		// pass the same interceptors (authentication, policy, validation).
		rest, err := vanguard.NewTranscoder(s.rest, vanguard.WithDefaultServiceOptions(
			vanguard.WithTargetProtocols(vanguard.ProtocolConnect), vanguard.WithTargetCodecs(vanguard.CodecProto)))
		if err != nil {
			panic(fmt.Sprintf("REST routes: %v", err)) // the contract's annotations are wrong
		}
		mux.Handle(RESTPrefix, rest)
	}
	var proxies []netip.Prefix
	for _, p := range s.opts.HTTP.TrustedProxies {
		if prefix, err := config.ParsePrefix(p); err == nil { // config validated them
			proxies = append(proxies, prefix)
		}
	}
	return middleware.HTTP(mux, middleware.HTTPOptions{
		Metrics:        s.opts.Metrics,
		Route:          s.route,
		AllowedOrigins: s.opts.HTTP.CORSAllowedOrigins,
		TrustedProxies: proxies,
		RedirectHTTPS:  s.opts.HTTP.HTTPSRedirect && !s.TLS(),
		Plain:          []string{"/health/", "/health/ready/", "/metrics", "/grpc.health.v1.Health/Check"},
	})
}

// route bounds the metrics label: known paths and procedures, else "other".
func (s *Server) route(path string) string {
	switch {
	case s.routes[path]:
		return path
	case strings.HasPrefix(path, "/grpc.health.v1.Health/"), strings.HasPrefix(path, "/grpc.reflection."):
		return path
	case strings.HasPrefix(path, RESTPrefix):
		return RESTPrefix
	}
	return "other"
}

// Serve serves on ln until ctx is done, then shuts down gracefully: readiness
// turns to "draining", new connections are refused, in-flight unary calls get
// up to ShutdownTimeout to finish, and open streams get StreamDrainTimeout
// before they are ended with unavailable/server_shutting_down.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           s.Handler(),
		Protocols:         &protocols,
		ReadHeaderTimeout: s.opts.HTTP.ReadHeaderTimeout,
		MaxHeaderBytes:    1 << 20,
		IdleTimeout:       2 * time.Minute,
		// Dead peers on long streams are found by HTTP/2 pings, not by waiting.
		HTTP2:    &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
		ErrorLog: slog.NewLogLogger(s.opts.Logger.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() {
		switch {
		case s.opts.GetCertificate != nil:
			// Each handshake gets the current certificate: a renewed one
			// serves new connections, open ones keep theirs.
			srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.opts.GetCertificate}
			errc <- srv.ServeTLS(ln, "", "")
		case s.opts.HTTP.TLSCertFile != "":
			errc <- srv.ServeTLS(ln, s.opts.HTTP.TLSCertFile, s.opts.HTTP.TLSKeyFile)
		default:
			errc <- srv.Serve(ln)
		}
	}()

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	s.opts.Logger.Info("shutting down", "shutdown_timeout", s.opts.HTTP.ShutdownTimeout.String(),
		"stream_drain_timeout", s.opts.HTTP.StreamDrainTimeout.String())
	s.opts.Readiness.SetDraining()
	streamTimer := time.AfterFunc(s.opts.HTTP.StreamDrainTimeout, s.drain)
	defer streamTimer.Stop()
	defer s.drain()

	shutdownCtx, cancel := context.WithTimeout(context.Background(), s.opts.HTTP.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	s.opts.Logger.Info("stopped")
	return nil
}

// healthChecker answers grpc.health.v1: the empty service name reports overall
// readiness (dependencies included), a mounted service reports SERVING unless
// the server is draining.
type healthChecker struct {
	readiness *Readiness
	services  []string
}

func (h *healthChecker) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	if req.Service == "" {
		if h.readiness.Check(ctx).Ready() {
			return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
		}
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	for _, name := range h.services {
		if name == req.Service {
			if h.readiness.draining.Load() {
				return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
			}
			return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
		}
	}
	return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %q", req.Service))
}
