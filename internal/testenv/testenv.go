// Package testenv starts and hands out the real components tests run
// against: PostgreSQL (a fresh database per test), Redis, a Redis of the
// test's own that it may stop and restart, the Temporal dev server and
// SpiceDB. A missing component fails the test with the command that fixes it;
// nothing is faked here.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// RepoRoot returns the directory holding go.mod.
func RepoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			panic("testenv: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Tool returns the path of a pinned tool binary (make tools installs them
// into ./bin, or AVB_TOOLS_DIR).
func Tool(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("AVB_TOOLS_DIR")
	if dir == "" {
		dir = filepath.Join(RepoRoot(), "bin")
	}
	path := filepath.Join(dir, name)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is not installed in %s: run  make tools", name, dir)
	}
	return path
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// PostgresServerURL is the server tests create their databases on.
func PostgresServerURL() string {
	if u := os.Getenv("AVB_TEST_POSTGRES_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// Postgres creates a fresh, empty database for the test and returns its URL.
// The database is dropped when the test ends.
func Postgres(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, PostgresServerURL())
	if err != nil {
		t.Fatalf("PostgreSQL is not reachable at %s (%v): run  make deps", PostgresServerURL(), err)
	}
	defer admin.Close(context.Background())
	name := "avbt_" + randomSuffix()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, PostgresServerURL())
		if err != nil {
			t.Logf("drop test database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop test database %s: %v", name, err)
		}
	})
	return strings.Replace(PostgresServerURL(), "/postgres?", "/"+name+"?", 1)
}

// AppURL turns a database URL of the owner (as Postgres returns) into the
// URL of the avb_app role on the same database, which row-level security
// applies to. The role exists once migrations have run.
func AppURL(ownerURL string) string {
	u, err := url.Parse(ownerURL)
	if err != nil {
		panic(err)
	}
	u.User = url.User("avb_app")
	return u.String()
}

// RedisURL returns the shared Redis server's URL after checking it answers.
func RedisURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("AVB_TEST_REDIS_URL")
	if u == "" {
		u = "redis://127.0.0.1:6379/0"
	}
	opts, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("parse redis url: %v", err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis is not reachable at %s (%v): run  make deps", u, err)
	}
	return u
}

// RedisClient is a client of the shared Redis server, closed when the test ends.
func RedisClient(t testing.TB) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Process is a component process a test started. Stop and Start let a test
// take it down and bring it back on the same address.
type Process struct {
	t      testing.TB
	name   string
	argv   []string
	addr   string
	ready  func(context.Context) error
	mu     sync.Mutex
	cmd    *exec.Cmd
	output *os.File
}

// Addr is host:port of the process.
func (p *Process) Addr() string { return p.addr }

// Start launches the process and waits until it is ready.
func (p *Process) Start() {
	p.t.Helper()
	if err := p.TryStart(); err != nil {
		p.t.Fatal(err)
	}
}

// TryStart launches the process and waits until it is ready, or reports why
// not (it exited, for example because a port it needs was taken).
func (p *Process) TryStart() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Stdout, cmd.Stderr = p.output, p.output
	// The child dies with the test binary even if cleanup never runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.cmd = cmd
	exited := make(chan struct{})
	go func() { _, _ = cmd.Process.Wait(); close(exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := p.ready(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			p.cmd = nil
			return fmt.Errorf("%s exited before it was ready (log: %s)", p.name, p.output.Name())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not become ready at %s within 60s: %v (log: %s)", p.name, p.addr, err, p.output.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills the process and waits for it to exit.
func (p *Process) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	_, _ = p.cmd.Process.Wait()
	p.cmd = nil
}

func newProcess(t testing.TB, name, addr string, ready func(context.Context) error, argv ...string) *Process {
	out, err := os.CreateTemp("", "avb-"+name+"-*.log")
	if err != nil {
		t.Fatalf("create log for %s: %v", name, err)
	}
	return &Process{t: t, name: name, argv: argv, addr: addr, ready: ready, output: out}
}

// StartRedis runs a Redis server of the test's own on a free port (no
// persistence) and stops it when the test ends.
func StartRedis(t testing.TB) *Process {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is not installed: run  apt-get install -y redis-server")
	}
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	_, port, _ := net.SplitHostPort(addr)
	client := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	p := newProcess(t, "redis", addr, func(ctx context.Context) error { return client.Ping(ctx).Err() },
		bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no")
	p.Start()
	t.Cleanup(func() { p.Stop(); _ = client.Close() })
	return p
}
