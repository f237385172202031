package server_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/metrics"
	"github.com/agentvoicebox/avb/server"
)

// selfSigned writes a certificate and key for 127.0.0.1 and returns their paths.
func selfSigned(t *testing.T) (certFile, keyFile string) { return testenv.SelfSigned(t) }

// With a certificate configured the same port serves HTTPS, with HTTP/2
// negotiated by ALPN, for gRPC and Connect alike.
func TestTLS(t *testing.T) {
	t.Parallel()
	cfg := testHTTPConfig()
	cfg.TLSCertFile, cfg.TLSKeyFile = selfSigned(t)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := server.New(server.Options{HTTP: cfg, Logger: log, Metrics: m, Gatherer: reg, Readiness: server.NewReadiness(nil, time.Second, log, m)})
	srv.Handle(avbv1connect.NewSystemServiceHandler(server.NewSystemServer("v", "test", nil), srv.HandlerOptions()...))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()

	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed test certificate
		ForceAttemptHTTP2: true,
	}}
	base := "https://" + ln.Addr().String()
	for name, opt := range map[string]connect.ClientOption{"grpc": connect.WithGRPC(), "connect": connect.WithProtoJSON()} {
		c := avbv1connect.NewSystemServiceClient(client, base, opt)
		if _, err := c.GetServerInfo(ctx, connect.NewRequest(&avbv1.GetServerInfoRequest{})); err != nil {
			t.Fatalf("%s over TLS: %v", name, err)
		}
	}
	res, err := client.Get(base + "/health/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.ProtoMajor != 2 || res.Header.Get("Strict-Transport-Security") == "" {
		t.Fatalf("want HTTP/2 with HSTS, got %s %v", res.Proto, res.Header)
	}
}
