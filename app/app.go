// Package app is the composition root: it builds every component from the
// configuration and runs the API server. cmd/avb calls it; integration tests
// call it the same way.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/platform/metrics"
	"github.com/agentvoicebox/avb/platform/probe"
	"github.com/agentvoicebox/avb/server"
	"github.com/agentvoicebox/avb/store"
)

// Version is the build version, set with -ldflags "-X .../app.Version=v1.2.3".
var Version = "dev"

// temporalHealthService is the service name Temporal's frontend reports health for.
const temporalHealthService = "temporal.api.workflowservice.v1.WorkflowService"

// App is a running set of components.
type App struct {
	cfg     *config.Config
	log     *slog.Logger
	db      *store.DB
	redis   *redis.Client
	probes  []*probe.GRPCHealth
	server  *server.Server
	Metrics *metrics.Metrics
}

// New builds the components. It does not wait for the dependencies: they are
// reported by readiness until they answer.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (*App, error) {
	a := &App{cfg: cfg, log: log}
	reg := prometheus.NewRegistry()
	a.Metrics = metrics.New(reg)

	db, err := store.Open(ctx, cfg.Database)
	if err != nil {
		return nil, err
	}
	a.db = db
	if cfg.Database.MigrateOnStart {
		applied, err := store.MigrateUp(ctx, db.Pool)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("migrate on start: %w", err)
		}
		for _, m := range applied {
			log.Info("migration applied", "version", m.Version, "name", m.Name)
		}
	}

	redisOpts, err := redis.ParseURL(cfg.Redis.URL)
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("parse redis url: %w", err)
	}
	a.redis = redis.NewClient(redisOpts)

	temporal, err := probe.NewGRPCHealth(cfg.Temporal.Address, temporalHealthService)
	if err != nil {
		a.Close()
		return nil, err
	}
	spicedb, err := probe.NewGRPCHealth(cfg.SpiceDB.Endpoint, "")
	if err != nil {
		a.Close()
		return nil, err
	}
	a.probes = []*probe.GRPCHealth{temporal, spicedb}

	required := func(name string) bool { return !slices.Contains(cfg.Readiness.Optional, name) }
	readiness := server.NewReadiness([]server.Dependency{
		{Name: "postgres", Required: required("postgres"), Probe: db.Ping},
		{Name: "redis", Required: required("redis"), Probe: func(ctx context.Context) error { return a.redis.Ping(ctx).Err() }},
		{Name: "temporal", Required: required("temporal"), Probe: temporal.Check},
		{Name: "spicedb", Required: required("spicedb"), Probe: spicedb.Check},
	}, cfg.Readiness.Timeout, log, a.Metrics)

	a.server = server.New(server.Options{
		HTTP:      cfg.HTTP,
		Logger:    log,
		Metrics:   a.Metrics,
		Gatherer:  reg,
		Readiness: readiness,
	})
	a.server.Handle(avbv1connect.NewSystemServiceHandler(server.NewSystemServer(Version, string(cfg.Profile)), a.server.HandlerOptions()...))
	return a, nil
}

// Serve listens on the configured address and serves until ctx is done, then
// shuts down gracefully. ready, if not nil, receives the bound address.
func (a *App) Serve(ctx context.Context, ready func(addr net.Addr)) error {
	ln, err := net.Listen("tcp", a.cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", a.cfg.HTTP.Addr, err)
	}
	a.log.Info("listening", "addr", ln.Addr().String(), "version", Version, "profile", a.cfg.Profile,
		"tls", a.cfg.HTTP.TLSCertFile != "", "services", a.server.Services())
	if ready != nil {
		ready(ln.Addr())
	}
	return a.server.Serve(ctx, ln)
}

// Close releases every client.
func (a *App) Close() {
	for _, p := range a.probes {
		_ = p.Close()
	}
	if a.redis != nil {
		_ = a.redis.Close()
	}
	if a.db != nil {
		a.db.Close()
	}
}
