package server_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/platform/metrics"
	"github.com/agentvoicebox/avb/server"
)

// BenchmarkMiddlewareOverhead compares a bare generated Connect handler with
// the same handler behind the full stack (request id, security headers, CORS,
// HTTP metrics, logging, error mapping, drain), over real loopback HTTP.
func BenchmarkMiddlewareOverhead(b *testing.B) {
	impl := server.NewSystemServer("bench", "test", nil)
	// Same compression threshold as the server, so only the middleware differs.
	_, bare := avbv1connect.NewSystemServiceHandler(impl, connect.WithCompressMinBytes(1024))

	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	srv := server.New(server.Options{
		HTTP: testHTTPConfig(), Logger: log, Metrics: m, Gatherer: reg,
		Readiness: server.NewReadiness(nil, time.Second, log, m),
	})
	srv.Handle(avbv1connect.NewSystemServiceHandler(impl, srv.HandlerOptions()...))

	for _, bc := range []struct {
		name string
		h    http.Handler
	}{
		{"bare", bare},
		{"full", srv.Handler()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var h http.Handler = bc.h
			if bc.name == "bare" {
				mux := http.NewServeMux()
				mux.Handle(avbv1connect.SystemServiceGetServerInfoProcedure, h)
				h = mux
			}
			ts := httptest.NewServer(h)
			defer ts.Close()
			client := avbv1connect.NewSystemServiceClient(ts.Client(), ts.URL, connect.WithProtoJSON())
			req := connect.NewRequest(&avbv1.GetServerInfoRequest{})
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := client.GetServerInfo(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
