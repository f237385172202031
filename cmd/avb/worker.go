package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/agentvoicebox/avb/app"
	"github.com/agentvoicebox/avb/platform/dependency"
	"github.com/agentvoicebox/avb/platform/events"
	"github.com/agentvoicebox/avb/platform/invalidation"
	"github.com/agentvoicebox/avb/platform/metrics"
	"github.com/agentvoicebox/avb/server"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/voice/calllimit"
	"github.com/agentvoicebox/avb/workflows"
)

func workerCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "worker",
		Short: "Run the Temporal workers: session workflows, post-call activities, scheduled jobs, batch speech jobs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := loadConfigAndLogger()
			if err != nil {
				return err
			}
			secrets, err := app.OpenSecrets(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			db, err := store.Open(cmd.Context(), cfg.Database, secrets.StoreOptions()...)
			if err != nil {
				return err
			}
			defer db.Close()
			go secrets.Run(cmd.Context(), db)
			deps := dependency.NewSet(dependency.Breaker{OpenFor: cfg.Breaker.OpenFor, Failures: cfg.Breaker.Failures}, log, nil)
			db.Guard(deps.Guard("postgres"), cfg.Database)
			c, err := client.Dial(client.Options{HostPort: cfg.Temporal.Address, Namespace: cfg.Temporal.Namespace,
				Logger: tlog.NewStructuredLogger(log.With("component", "temporal"))})
			if err != nil {
				return fmt.Errorf("connect to temporal at %s: %w", cfg.Temporal.Address, err)
			}
			defer c.Close()
			opts, err := redis.ParseURL(cfg.Redis.URL)
			if err != nil {
				return err
			}
			opts.DialTimeout = cfg.Redis.DialTimeout
			opts.ReadTimeout, opts.WriteTimeout, opts.PoolTimeout = cfg.Redis.CommandTimeout, cfg.Redis.CommandTimeout, cfg.Redis.CommandTimeout
			rdb := redis.NewClient(opts)
			defer rdb.Close()
			bus := invalidation.New(rdb, log)
			prov, err := app.Providers(cfg.Voice, secrets.OpenAI, deps)
			if err != nil {
				return err
			}
			q := workflows.Queues{Prefix: cfg.Temporal.QueuePrefix}
			reg := prometheus.NewRegistry()
			m := metrics.New(reg)
			bill, err := app.NewBilling(cfg.Billing, secrets, db, deps, events.Hub{Redis: rdb}, m, log)
			if err != nil {
				return err
			}
			acts := &workflows.Activities{DB: db, Quotas: bill.Quotas, EndLiveCall: func(ctx context.Context, id, reason string) error {
				return bus.Publish(ctx, server.TopicSession, server.EndLiveCallKey(id, reason))
			}, Held: calllimit.New(rdb, cfg.Voice.MaxCallsPerTenant).Held}
			acts.AuditRetention.Days, acts.AuditRetention.MaxDays = cfg.Audit.RetentionDays, cfg.Audit.RetentionMaxDays
			ws := workflows.NewWorkers(c, q, acts, &workflows.Jobs{DB: db, STT: prov.STT, TTS: prov.TTS}, &workflows.Notifications{Events: events.Hub{Redis: rdb}, Notifier: &events.Notifier{DB: db, Hub: events.Hub{Redis: rdb}}}, bill.Activities)
			if err := workflows.Prepare(cmd.Context(), c, cfg.Temporal.Namespace, q); err != nil {
				return err
			}
			if err := ws.Start(); err != nil {
				return err
			}
			defer ws.Stop()
			// Liveness and metrics for the orchestrator and Prometheus.
			ln, err := net.Listen("tcp", cfg.Worker.Addr)
			if err != nil {
				return fmt.Errorf("worker health and metrics on %s: %w", cfg.Worker.Addr, err)
			}
			hs := &http.Server{Handler: server.WorkerHandler(reg), ReadHeaderTimeout: 5 * time.Second}
			go func() { _ = hs.Serve(ln) }()
			defer hs.Close()
			log.Info("worker running", "health", "http://"+ln.Addr().String()+"/health/", "task_queues", []string{q.Name(workflows.QueueDefault), q.Name(workflows.QueueVoice), q.Name(workflows.QueueBilling), q.Name(workflows.QueueNotifications)}, "temporal", cfg.Temporal.Address)
			<-cmd.Context().Done()
			return nil
		},
	}
}
