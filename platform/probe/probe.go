// Package probe checks that network dependencies answer, for readiness.
package probe

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// GRPCHealth probes a gRPC server's standard health service (grpc.health.v1)
// for one service name; Temporal and SpiceDB both serve it. The connection is
// reused between probes and redials quickly after the server comes back.
type GRPCHealth struct {
	conn    *grpc.ClientConn
	service string
}

// NewGRPCHealth returns a probe of target (host:port) for service. It does
// not dial until the first Check.
func NewGRPCHealth(target, service string) (*GRPCHealth, error) {
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		return nil, fmt.Errorf("create health client for %s: %w", target, err)
	}
	return &GRPCHealth{conn: conn, service: service}, nil
}

// Check returns nil when the service reports SERVING.
func (p *GRPCHealth) Check(ctx context.Context) error {
	res, err := healthpb.NewHealthClient(p.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: p.service}, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("health check %s: %w", p.conn.Target(), err)
	}
	if res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health check %s: %s", p.conn.Target(), res.GetStatus())
	}
	return nil
}

// Close releases the connection.
func (p *GRPCHealth) Close() error { return p.conn.Close() }
