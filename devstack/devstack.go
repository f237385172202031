// Package devstack runs the whole platform on one machine for development
// (`avb dev`): it checks PostgreSQL and Redis, starts the pinned Temporal dev
// server and SpiceDB as child processes (or reuses ones already answering),
// applies migrations and serves the API, printing progress and endpoints.
// Stopping it (Ctrl-C) stops everything it started.
package devstack

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/agentvoicebox/avb/app"
	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/platform/probe"
	"github.com/agentvoicebox/avb/store"
)

// Options configure Run.
type Options struct {
	Config *config.Config
	// Out receives the progress lines meant for the person at the terminal.
	Out io.Writer
	// Log receives the server's structured logs.
	Log *slog.Logger
}

// Run brings the stack up, serves until ctx is done, then tears it down.
func Run(ctx context.Context, o Options) error {
	cfg := o.Config
	started := time.Now()
	if err := os.MkdirAll(cfg.Dev.DataDir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	var children []*child
	defer func() {
		for i := len(children) - 1; i >= 0; i-- {
			children[i].stop(o.Out)
		}
	}()

	if err := step(o.Out, "postgres", func() error { return checkPostgres(ctx, cfg.Database.MigrationURL) }); err != nil {
		return err
	}
	if err := step(o.Out, "redis", func() error { return checkRedis(ctx, cfg.Redis.URL) }); err != nil {
		return err
	}
	for _, svc := range []service{temporalService(cfg), spicedbService(cfg)} {
		c, err := svc.ensure(ctx, o.Out)
		if err != nil {
			return err
		}
		if c != nil {
			children = append(children, c)
		}
	}
	if cfg.SIP.Addr == defaultSIPAddr && os.Getenv("AVB_SIP_ADDR") == "" && !portFree(cfg.SIP.Addr) {
		// Another SIP program holds 5060 here: the demo number still works,
		// on a port of its own (printed below).
		fmt.Fprintf(o.Out, "sip: %s is taken on this machine; the demo number listens on another port\n", cfg.SIP.Addr)
		cfg.SIP.Addr = "127.0.0.1:0"
	}
	var a *app.App
	if err := step(o.Out, "migrations", func() error {
		var err error
		a, err = app.New(ctx, cfg, o.Log) // applies pending migrations (AVB_DATABASE_MIGRATE_ON_START)
		return err
	}); err != nil {
		return err
	}
	defer a.Close()
	var creds *Credentials
	if err := step(o.Out, "demo tenant", func() error {
		var err error
		creds, err = seed(ctx, a, cfg.Dev.DataDir)
		return err
	}); err != nil {
		return err
	}

	return a.Serve(ctx, func(addr net.Addr) {
		base := "http://" + hostPort(addr)
		fmt.Fprintf(o.Out, "\nAgentVoiceBox is up in %s\n", time.Since(started).Round(10*time.Millisecond))
		fmt.Fprintf(o.Out, "  API (Connect, gRPC, gRPC-Web)  %s\n", base)
		fmt.Fprintf(o.Out, "  liveness / readiness           %s/health/  %s/health/ready/\n", base, base)
		fmt.Fprintf(o.Out, "  metrics                        %s/metrics\n", base)
		fmt.Fprintf(o.Out, "  Temporal UI                    http://%s\n", temporalUIAddr(cfg))
		fmt.Fprintf(o.Out, "  try: curl -s %s/health/ready/\n", base)
		fmt.Fprintf(o.Out, "       curl -s -H 'Content-Type: application/json' -d '{}' %s/avb.v1.SystemService/GetServerInfo\n", base)
		creds.print(o.Out, base)
		if sip := a.SIPAddr(); sip.IsValid() {
			fmt.Fprintf(o.Out, "  phone: a softphone on this machine calls the demo project at sip:%s@%s\n", DemoNumber, sip)
		}
		fmt.Fprintf(o.Out, "\nCtrl-C stops everything. Logs of the started services are in %s\n\n", cfg.Dev.DataDir)
	})
}

func hostPort(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil || host == "::" || host == "0.0.0.0" || host == "" {
		return "localhost:" + port
	}
	return addr.String()
}

// step runs fn and prints its outcome and duration.
func step(out io.Writer, name string, fn func() error) error {
	fmt.Fprintf(out, "  %-11s ...", name)
	start := time.Now()
	if err := fn(); err != nil {
		fmt.Fprintf(out, " FAILED\n")
		return fmt.Errorf("%s: %w", name, err)
	}
	fmt.Fprintf(out, " ok (%s)\n", time.Since(start).Round(time.Millisecond))
	return nil
}

func checkPostgres(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := store.EnsureDatabase(ctx, url); err != nil {
		return fmt.Errorf("%w\n  PostgreSQL must answer at AVB_DATABASE_URL. On Debian: run  make deps  (starts a local one), "+
			"or  apt-get install -y postgresql && pg_ctlcluster 15 main start", err)
	}
	return nil
}

func checkRedis(ctx context.Context, url string) error {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return fmt.Errorf("parse AVB_REDIS_URL: %w", err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("%w\n  Redis must answer at AVB_REDIS_URL. On Debian: run  make deps  (starts a local one), "+
			"or  apt-get install -y redis-server && redis-server --daemonize yes", err)
	}
	return nil
}

// service is a component avb dev starts unless one already answers.
type service struct {
	name    string
	addr    string
	health  string // grpc.health.v1 service name
	binary  string
	args    []string
	logFile string
	// prepare runs before the first start (migrations of its own datastore).
	prepare func(context.Context) error
}

// temporalUIAddr is where the dev server's web UI listens: the frontend port
// plus 1000 (7233 -> 8233, Temporal's own convention).
func temporalUIAddr(cfg *config.Config) string {
	host, port, _ := net.SplitHostPort(cfg.Temporal.Address)
	n, _ := strconv.Atoi(port)
	return net.JoinHostPort(host, strconv.Itoa(n+1000))
}

func temporalService(cfg *config.Config) service {
	host, port, _ := net.SplitHostPort(cfg.Temporal.Address)
	_, uiPort, _ := net.SplitHostPort(temporalUIAddr(cfg))
	return service{
		name: "temporal", addr: cfg.Temporal.Address, health: "temporal.api.workflowservice.v1.WorkflowService",
		binary: filepath.Join(cfg.Dev.ToolsDir, "temporal"),
		args: []string{"server", "start-dev", "--ip", host, "--port", port, "--ui-port", uiPort,
			"--db-filename", filepath.Join(cfg.Dev.DataDir, "temporal.db"), "--log-level", "warn",
			"--namespace", cfg.Temporal.Namespace, "--search-attribute", "AvbTenantId=Keyword"},
		logFile: filepath.Join(cfg.Dev.DataDir, "temporal.log"),
	}
}

// SpiceDBDatastore is SpiceDB's own database beside the platform's
// ("avb" -> "avb_spicedb"), so relationships survive restarts of avb dev.
func SpiceDBDatastore(cfg *config.Config) string {
	u, err := url.Parse(cfg.Database.MigrationURL)
	if err != nil {
		return ""
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "_spicedb"
	return u.String()
}

func spicedbService(cfg *config.Config) service {
	ds := SpiceDBDatastore(cfg)
	return service{
		name: "spicedb", addr: cfg.SpiceDB.Endpoint,
		binary: filepath.Join(cfg.Dev.ToolsDir, "spicedb"),
		prepare: func(ctx context.Context) error {
			if err := store.EnsureDatabase(ctx, ds); err != nil {
				return err
			}
			out, err := exec.CommandContext(ctx, filepath.Join(cfg.Dev.ToolsDir, "spicedb"), "datastore", "migrate", "head",
				"--datastore-engine", "postgres", "--datastore-conn-uri", ds, "--log-level", "warn").CombinedOutput()
			if err != nil {
				return fmt.Errorf("spicedb datastore migrate: %w: %s", err, out)
			}
			return nil
		},
		args: []string{"serve", "--grpc-preshared-key", cfg.SpiceDB.Token,
			"--datastore-engine", "postgres", "--datastore-conn-uri", ds,
			"--grpc-addr", cfg.SpiceDB.Endpoint, "--http-enabled=false", "--metrics-enabled=false",
			"--telemetry-endpoint=", "--skip-release-check", "--log-level", "warn"},
		logFile: filepath.Join(cfg.Dev.DataDir, "spicedb.log"),
	}
}

// ensure reuses a running instance or starts one and waits until it is healthy.
func (s service) ensure(ctx context.Context, out io.Writer) (*child, error) {
	pr, err := probe.NewGRPCHealth(s.addr, s.health)
	if err != nil {
		return nil, err
	}
	defer pr.Close()
	quick, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if pr.Check(quick) == nil {
		fmt.Fprintf(out, "  %-11s ... already running at %s, reusing it\n", s.name, s.addr)
		return nil, nil
	}
	var c *child
	err = step(out, s.name, func() error {
		if _, err := os.Stat(s.binary); err != nil {
			return fmt.Errorf("%s is not installed: run  make tools  (or make dev, which does)", s.binary)
		}
		if s.prepare != nil {
			if err := s.prepare(ctx); err != nil {
				return err
			}
		}
		var err error
		if c, err = startChild(s); err != nil {
			return err
		}
		return c.waitHealthy(ctx, pr, 60*time.Second)
	})
	if err != nil && c != nil {
		c.stop(io.Discard)
		return nil, err
	}
	return c, err
}

// child is a process avb dev started.
type child struct {
	name   string
	cmd    *exec.Cmd
	exited chan error
	log    string
}

func startChild(s service) (*child, error) {
	logf, err := os.OpenFile(s.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", s.logFile, err)
	}
	cmd := exec.Command(s.binary, s.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, so Ctrl-C in the terminal reaches avb only and avb
	// stops the children in order; Pdeathsig covers avb being killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", s.name, err)
	}
	c := &child{name: s.name, cmd: cmd, exited: make(chan error, 1), log: s.logFile}
	go func() { c.exited <- cmd.Wait(); logf.Close() }()
	return c, nil
}

func (c *child) waitHealthy(ctx context.Context, pr *probe.GRPCHealth, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		attempt, cancel := context.WithTimeout(ctx, time.Second)
		err := pr.Check(attempt)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case exitErr := <-c.exited:
			c.exited <- exitErr
			return fmt.Errorf("%s exited (%v) before it was ready; see %s", c.name, exitErr, c.log)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s; see %s", c.name, limit, c.log)
		}
	}
}

// stop asks the child to exit, then kills it after five seconds.
func (c *child) stop(out io.Writer) {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.exited
	}
	fmt.Fprintf(out, "  stopped %s\n", c.name)
}

// defaultSIPAddr is where make dev listens for SIP unless told otherwise.
const defaultSIPAddr = "127.0.0.1:5060"

// portFree reports whether addr can be bound for UDP and TCP.
func portFree(addr string) bool {
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	defer u.Close()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	return l.Close() == nil
}
