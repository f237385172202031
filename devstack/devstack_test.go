package devstack_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agentvoicebox/avb/devstack"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/loadtest"
	"github.com/agentvoicebox/avb/platform/config"
)

// avb dev brings up Temporal and SpiceDB itself, reaches ready with all four
// dependencies up, serves every curl example of the README with the
// credentials it printed, and stops every process it started when cancelled.
// The ports are random; a start that loses a port race is tried again.
func TestDevStackServesTheReadmeAndCleansUp(t *testing.T) {
	for attempt := 1; ; attempt++ {
		out, err := runDevStack(t, func(base, printed string) {
			checkDemoProject(t, base, exports(printed)["AVB_API_KEY"])
			checkDemoPhone(t, printed)
			t.Logf("%d curl commands of the README ran against avb dev", runExamples(t, base, printed))
		})
		if err == nil {
			return
		}
		if attempt == 3 || !strings.Contains(out, "exited") {
			t.Fatalf("%v\n%s", err, out)
		}
		t.Logf("attempt %d lost a port race: %v", attempt, err)
	}
}

// runDevStack runs avb dev until it is ready, calls whileUp with its address
// and what it printed, then stops it.
func runDevStack(t *testing.T, whileUp func(base, printed string)) (string, error) {
	temporalPort, spicePort, httpPort, sipPort := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	dbURL := testenv.Postgres(t)
	env := map[string]string{
		"AVB_PROFILE":                "dev",
		"AVB_HTTP_ADDR":              fmt.Sprintf("127.0.0.1:%d", httpPort),
		"AVB_SIP_ADDR":               fmt.Sprintf("127.0.0.1:%d", sipPort),
		"AVB_SIP_RTP_PORTS":          "36000-36999",
		"AVB_DATABASE_URL":           testenv.AppURL(dbURL),
		"AVB_DATABASE_MIGRATION_URL": dbURL,
		"AVB_REDIS_URL":              testenv.RedisURL(t),
		"AVB_TEMPORAL_ADDRESS":       fmt.Sprintf("127.0.0.1:%d", temporalPort),
		"AVB_SPICEDB_ENDPOINT":       fmt.Sprintf("127.0.0.1:%d", spicePort),
		"AVB_DEV_DATA_DIR":           t.TempDir(),
		"AVB_TOOLS_DIR":              filepath.Dir(testenv.Tool(t, "temporal")),
	}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropDatabase(t, devstack.SpiceDBDatastore(cfg)) })
	var out testenv.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- devstack.Run(ctx, devstack.Options{Config: cfg, Out: &out, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	stopped := false
	t.Cleanup(func() { // a failed test still stops the processes avb dev started
		if !stopped {
			cancel()
			<-done
		}
	})

	ready := fmt.Sprintf("http://127.0.0.1:%d/health/ready/", httpPort)
	deadline := time.Now().Add(90 * time.Second)
	for {
		res, err := http.Get(ready)
		if err == nil {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == 200 && strings.Count(string(body), `"status":"up"`) == 4 {
				break
			}
		}
		select {
		case err := <-done:
			stopped = true
			cancel()
			return out.String(), fmt.Errorf("avb dev exited early: %w", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready in time:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "AgentVoiceBox is up") {
		t.Fatalf("no endpoints printed:\n%s", out.String())
	}
	whileUp(fmt.Sprintf("http://127.0.0.1:%d", httpPort), out.String())

	stopped = true
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("avb dev returned %v on stop", err)
	}
	for _, name := range []string{"temporal", "spicedb"} {
		if !strings.Contains(out.String(), "stopped "+name) {
			t.Errorf("%s not stopped:\n%s", name, out.String())
		}
		pattern := fmt.Sprintf("%d", map[string]int{"temporal": temporalPort, "spicedb": spicePort}[name])
		if exec.Command("pgrep", "-f", pattern).Run() == nil {
			t.Errorf("a %s process on port %s is still running", name, pattern)
		}
	}
	return out.String(), nil
}

func dropDatabase(t *testing.T, rawURL string) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return
	}
	name := strings.TrimPrefix(u.Path, "/")
	c, err := pgx.Connect(context.Background(), testenv.PostgresServerURL())
	if err != nil {
		return
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Logf("drop %s: %v", name, err)
	}
}

// checkDemoProject: the demo tenant has its project, with phrase hints the
// scripted model understands, so a newcomer's first call is heard right.
func checkDemoProject(t *testing.T, base, key string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/avb.v1.ProjectService/ListProjects", strings.NewReader(`{"nameContains":"Demo"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || !strings.Contains(string(body), `"name":"Demo"`) || !strings.Contains(string(body), "please book a meeting for tomorrow at ten") {
		t.Fatalf("demo project: %d %s", res.StatusCode, body)
	}
}

// checkDemoPhone: the number make dev prints answers a softphone on this
// machine, with no credentials.
func checkDemoPhone(t *testing.T, printed string) {
	t.Helper()
	m := regexp.MustCompile(`sip:(\+[0-9]+)@([0-9.:]+)`).FindStringSubmatch(printed)
	if m == nil {
		t.Fatalf("no phone number printed:\n%s", printed)
	}
	ph, err := loadtest.NewSoftphone(netip.MustParseAddrPort(m[2]))
	if err != nil {
		t.Fatal(err)
	}
	defer ph.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := ph.Call(ctx, m[1], "", "")
	if err != nil {
		t.Fatalf("calling %s: %v", m[0], err)
	}
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
}
