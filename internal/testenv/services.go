package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"

	"github.com/agentvoicebox/avb/platform/probe"
)

// shared holds the processes one test binary shares between its tests:
// starting Temporal takes seconds, so it starts once. Stop them from TestMain
// with Main.
var shared struct {
	sync.Mutex
	temporal *Process
	spicedb  *Process
	vault    *Process
}

// Main runs the tests and stops the shared processes afterwards. Use it as
// func TestMain(m *testing.M) { testenv.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	shared.Lock()
	for _, p := range []*Process{shared.temporal, shared.spicedb, shared.vault} {
		if p != nil {
			p.Stop()
		}
	}
	shared.Unlock()
	os.Exit(code)
}

// Temporal returns the address (host:port) of a Temporal dev server shared by
// the test binary, namespace "default", in-memory.
func Temporal(t testing.TB) string {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	// The dev server also binds ports next to its frontend port, which another
	// process may hold: try a few port choices before giving up.
	for attempt := 1; shared.temporal == nil; attempt++ {
		port := FreePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		pr, err := probe.NewGRPCHealth(addr, "temporal.api.workflowservice.v1.WorkflowService")
		if err != nil {
			t.Fatal(err)
		}
		p := newProcess(t, "temporal", addr, pr.Check, Tool(t, "temporal"), "server", "start-dev",
			"--ip", "127.0.0.1", "--port", fmt.Sprint(port), "--headless",
			"--ui-port", fmt.Sprint(FreePort(t)), "--http-port", fmt.Sprint(FreePort(t)),
			"--metrics-port", fmt.Sprint(FreePort(t)), "--log-level", "error",
			"--search-attribute", "AvbTenantId=Keyword")
		if err := p.TryStart(); err != nil {
			if attempt == 3 {
				t.Fatal(err)
			}
			continue
		}
		shared.temporal = p
	}
	return shared.temporal.Addr()
}

// SpiceDB returns the address of a SpiceDB serve-testing server shared by the
// test binary, and a fresh preshared key: serve-testing gives every distinct
// key its own empty store, so tests are isolated from each other.
func SpiceDB(t testing.TB) (addr, token string) {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.spicedb == nil {
		addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		pr, err := probe.NewGRPCHealth(addr, "")
		if err != nil {
			t.Fatal(err)
		}
		p := newProcess(t, "spicedb", addr, pr.Check, Tool(t, "spicedb"), "serve-testing",
			"--grpc-addr", addr, "--readonly-grpc-addr", fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
			"--log-level", "warn")
		p.Start()
		shared.spicedb = p
	}
	return shared.spicedb.Addr(), "test-" + randomSuffix()
}

// SpiceDBKey is the preshared key of the SpiceDB processes tests start.
const SpiceDBKey = "avb-test-key"

// StartSpiceDBPostgres runs a SpiceDB of the test's own, on a PostgreSQL
// datastore (a fresh database), so it keeps its data when the test stops and
// restarts it.
func StartSpiceDBPostgres(t testing.TB) *Process {
	t.Helper()
	bin := Tool(t, "spicedb")
	ds := Postgres(t)
	out, err := exec.Command(bin, "datastore", "migrate", "head", "--datastore-engine", "postgres",
		"--datastore-conn-uri", ds, "--log-level", "warn").CombinedOutput()
	if err != nil {
		t.Fatalf("migrate the spicedb datastore: %v\n%s", err, out)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	pr, err := probe.NewGRPCHealth(addr, "")
	if err != nil {
		t.Fatal(err)
	}
	p := newProcess(t, "spicedb-pg", addr, pr.Check, bin, "serve", "--grpc-preshared-key", SpiceDBKey,
		"--datastore-engine", "postgres", "--datastore-conn-uri", ds, "--grpc-addr", addr,
		"--http-enabled=false", "--metrics-enabled=false", "--telemetry-endpoint=", "--skip-release-check",
		"--log-level", "warn")
	p.Start()
	t.Cleanup(func() { p.Stop(); _ = pr.Close() })
	return p
}
