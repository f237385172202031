package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/agentvoicebox/avb/authn"
	"github.com/agentvoicebox/avb/internal/testenv"
)

// buildAVB compiles the binary once for the test.
func buildAVB(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "avb")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("build avb: %v\n%s", err, out)
	}
	return bin
}

// Start-up with a bad environment exits non-zero with one message that names
// every missing or invalid variable.
func TestBadConfigurationExitsWithOneMessage(t *testing.T) {
	bin := buildAVB(t)
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(cleanEnv(), "AVB_PROFILE=prod", "AVB_LOG_LEVEL=loud", "AVB_REDIS_URL=redis://r:6379/0",
		"AVB_TEMPORAL_ADDRESS=t:7233", "AVB_SPICEDB_ENDPOINT=s:50051")
	out, err := cmd.CombinedOutput()
	exit, ok := err.(*exec.ExitError)
	if !ok || exit.ExitCode() != 2 {
		t.Fatalf("want exit code 2, got %v\n%s", err, out)
	}
	msg := string(out)
	if strings.Count(msg, "avb: invalid configuration") != 1 {
		t.Fatalf("want exactly one configuration message:\n%s", msg)
	}
	for _, v := range []string{"AVB_DATABASE_URL", "AVB_SPICEDB_TOKEN", "AVB_LOG_LEVEL"} {
		if !strings.Contains(msg, v+":") {
			t.Errorf("message does not name %s:\n%s", v, msg)
		}
	}
	if strings.Contains(msg, "AVB_REDIS_URL:") {
		t.Errorf("message names a valid variable:\n%s", msg)
	}
}

func TestConfigCheckRedactsSecrets(t *testing.T) {
	bin := buildAVB(t)
	cmd := exec.Command(bin, "config", "check")
	cmd.Env = append(cleanEnv(), "AVB_DATABASE_URL=postgres://avb:topsecret@db:5432/avb", "AVB_SPICEDB_TOKEN=alsosecret")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if strings.Contains(string(out), "topsecret") || strings.Contains(string(out), "alsosecret") {
		t.Fatalf("secret printed:\n%s", out)
	}
	if !strings.Contains(string(out), "postgres://avb:REDACTED@db:5432/avb") {
		t.Fatalf("effective database url not shown:\n%s", out)
	}
}

// cleanEnv is the process environment without AVB_ variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AVB_") {
			env = append(env, kv)
		}
	}
	return env
}

// avb apikey create prints a working key once, for a tenant named by slug.
func TestAPIKeyCreateCommand(t *testing.T) {
	bin := buildAVB(t)
	owner := testenv.Postgres(t)
	spiceAddr, spiceToken := testenv.SpiceDB(t)
	env := append(cleanEnv(), "AVB_PROFILE=test", "AVB_DATABASE_URL="+testenv.AppURL(owner), "AVB_DATABASE_MIGRATION_URL="+owner,
		"AVB_SPICEDB_ENDPOINT="+spiceAddr, "AVB_SPICEDB_TOKEN="+spiceToken, "AVB_REDIS_URL="+testenv.RedisURL(t))
	run := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		out, err := cmd.Output()
		return string(out), err
	}
	if out, err := run("migrate", "up"); err != nil {
		t.Fatalf("migrate up: %v %s", err, out)
	}
	conn, err := pgx.Connect(t.Context(), owner)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	if _, err := conn.Exec(t.Context(), "INSERT INTO tenants (name, slug) VALUES ('Ops', 'ops')"); err != nil {
		t.Fatal(err)
	}
	out, err := run("apikey", "create", "--tenant", "ops", "--name", "deploy", "--scopes", "admin,realtime", "--expires-in", "720h")
	if err != nil {
		t.Fatalf("apikey create: %v %s", err, out)
	}
	secret := strings.TrimSpace(out)
	if !authn.LooksLikeAPIKey(secret) {
		t.Fatalf("printed %q, not a key", out)
	}
	var scopes []string
	if err := conn.QueryRow(t.Context(), "SELECT scopes FROM api_keys WHERE key_hash = $1", authn.HashAPIKey(secret)).Scan(&scopes); err != nil {
		t.Fatalf("key not stored by hash: %v", err)
	}
	if strings.Join(scopes, ",") != "admin,realtime" {
		t.Fatalf("scopes %v", scopes)
	}
	if out, err := run("migrate", "status"); err != nil || !strings.Contains(out, "0002") || strings.Contains(out, "pending") {
		t.Fatalf("migrate status: %v\n%s", err, out)
	}
	if _, err := run("apikey", "create", "--tenant", "nope", "--name", "x"); err == nil {
		t.Fatal("unknown tenant accepted")
	}
	// The key's creation is in the tenant's audit trail, which verifies;
	// after a superuser edits an entry, verify names it and fails.
	if out, err := run("audit", "verify", "--tenant", "ops"); err != nil || !strings.Contains(out, "1 entries checked") || !strings.Contains(out, "intact") {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
	if _, err := conn.Exec(t.Context(), `BEGIN; ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_immutable;
		UPDATE audit_logs SET actor_type = 'user'; ALTER TABLE audit_logs ENABLE TRIGGER audit_logs_immutable; COMMIT`); err != nil {
		t.Fatal(err)
	}
	if out, err := run("audit", "verify", "--tenant", "ops"); err == nil || !strings.Contains(out, "broken at 1 (entry ") {
		t.Fatalf("a tampered chain: %v\n%s", err, out)
	}
}

func TestMain(m *testing.M) { testenv.Main(m) }
