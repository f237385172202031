package config_test

import (
	"errors"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/platform/config"
)

// prodEnv is a complete, valid production environment.
func prodEnv() map[string]string {
	return map[string]string{
		"AVB_PROFILE":             "prod",
		"AVB_DATABASE_URL":        "postgres://avb:s3cret@db.internal:5432/avb?sslmode=require",
		"AVB_REDIS_URL":           "redis://:hunter2@redis.internal:6379/0",
		"AVB_TEMPORAL_ADDRESS":    "temporal.internal:7233",
		"AVB_SPICEDB_ENDPOINT":    "spicedb.internal:50051",
		"AVB_SPICEDB_TOKEN":       "prod-preshared-key",
		"AVB_OIDC_ISSUER_URL":     "https://id.example.com/realms/avb",
		"AVB_CLIENT_TOKEN_SECRET": "0123456789abcdef0123456789abcdef",
	}
}

func lookupIn(env map[string]string) config.Lookup {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

func TestProdRequiresExactlyTheDeploymentVariables(t *testing.T) {
	t.Parallel()
	_, err := config.Load(lookupIn(map[string]string{"AVB_PROFILE": "prod"}))
	var cerr *config.Error
	if !errors.As(err, &cerr) {
		t.Fatalf("want *config.Error, got %v", err)
	}
	want := []string{"AVB_DATABASE_URL", "AVB_REDIS_URL", "AVB_TEMPORAL_ADDRESS", "AVB_SPICEDB_ENDPOINT", "AVB_SPICEDB_TOKEN", "AVB_OIDC_ISSUER_URL", "AVB_CLIENT_TOKEN_SECRET"}
	if got := cerr.Vars(); !slices.Equal(got, want) {
		t.Fatalf("problems name %v, want %v\n%v", got, want, err)
	}
	if _, err := config.Load(lookupIn(prodEnv())); err != nil {
		t.Fatalf("complete prod environment rejected: %v", err)
	}
}

func TestDevAndTestNeedNothing(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"", "dev", "test"} {
		cfg, err := config.Load(lookupIn(map[string]string{"AVB_PROFILE": p}))
		if err != nil {
			t.Fatalf("profile %q: %v", p, err)
		}
		if cfg.Database.URL == "" || cfg.Redis.URL == "" {
			t.Fatalf("profile %q: defaults missing: %+v", p, cfg)
		}
	}
}

// invalidValues holds, for some variables, a value that must be rejected.
var invalidValues = map[string]string{
	"AVB_HTTP_ADDR":                   "8080",
	"AVB_READ_HEADER_TIMEOUT":         "ten seconds",
	"AVB_MAX_REQUEST_BYTES":           "12",
	"AVB_SHUTDOWN_TIMEOUT":            "-5s",
	"AVB_LOG_LEVEL":                   "verbose",
	"AVB_LOG_FORMAT":                  "xml",
	"AVB_DATABASE_URL":                "mysql://db/avb",
	"AVB_DATABASE_MAX_CONNS":          "many",
	"AVB_DATABASE_CONNECT_TIMEOUT":    "1ns",
	"AVB_DATABASE_MIGRATE_ON_START":   "maybe",
	"AVB_REDIS_URL":                   "http://redis",
	"AVB_TEMPORAL_ADDRESS":            "temporal",
	"AVB_SPICEDB_ENDPOINT":            "spicedb:port",
	"AVB_SPICEDB_INSECURE":            "yes please",
	"AVB_READINESS_TIMEOUT":           "0s",
	"AVB_READINESS_OPTIONAL":          "postgres,kafka",
	"AVB_TLS_CERT_FILE":               "/nonexistent/cert.pem",
	"AVB_DATABASE_MAX_CONN_LIFETIME":  "1s",
	"AVB_OIDC_ISSUER_URL":             "ftp://id.example.com",
	"AVB_TENANT_CACHE_TTL":            "soon",
	"AVB_APIKEY_USAGE_FLUSH_INTERVAL": "1ms",
	"AVB_MAX_CALLS_PER_TENANT":        "0",
}

// Property 1: for random subsets of required variables removed and of other
// variables given invalid values, loading fails and the one message names
// exactly those variables.
func TestPropertyStartupNamesExactlyTheBadVariables(t *testing.T) {
	t.Parallel()
	required := []string{"AVB_DATABASE_URL", "AVB_REDIS_URL", "AVB_TEMPORAL_ADDRESS", "AVB_SPICEDB_ENDPOINT", "AVB_SPICEDB_TOKEN", "AVB_OIDC_ISSUER_URL", "AVB_CLIENT_TOKEN_SECRET"}
	invalidNames := slices.Sorted(maps.Keys(invalidValues))
	rapid.Check(t, func(t *rapid.T) {
		env := prodEnv()
		want := map[string]bool{}
		for _, name := range rapid.SliceOfDistinct(rapid.SampledFrom(required), rapid.ID[string]).Draw(t, "removed") {
			if rapid.Bool().Draw(t, "empty instead of absent") {
				env[name] = ""
			} else {
				delete(env, name)
			}
			want[name] = true
		}
		for _, name := range rapid.SliceOfDistinct(rapid.SampledFrom(invalidNames), rapid.ID[string]).Draw(t, "invalid") {
			env[name] = invalidValues[name]
			want[name] = true
		}
		_, err := config.Load(lookupIn(env))
		if len(want) == 0 {
			if err != nil {
				t.Fatalf("valid environment rejected: %v", err)
			}
			return
		}
		var cerr *config.Error
		if !errors.As(err, &cerr) {
			t.Fatalf("want *config.Error naming %v, got %v", want, err)
		}
		got := map[string]bool{}
		for _, v := range cerr.Vars() {
			if got[v] {
				t.Fatalf("%s named twice:\n%v", v, err)
			}
			got[v] = true
		}
		if !maps.Equal(got, want) {
			t.Fatalf("message names %v, want exactly %v:\n%v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)), err)
		}
		for _, p := range cerr.Problems {
			if !strings.Contains(err.Error(), p.Var+": ") || p.Reason == "" {
				t.Fatalf("problem %+v is not explained in %q", p, err)
			}
		}
	})
}

func TestCrossFieldRules(t *testing.T) {
	t.Parallel()
	cert := t.TempDir() + "/cert.pem"
	if err := os.WriteFile(cert, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		set  map[string]string
		want string
	}{
		{"cert without key", map[string]string{"AVB_TLS_CERT_FILE": cert}, "AVB_TLS_KEY_FILE"},
		{"key without cert", map[string]string{"AVB_TLS_KEY_FILE": cert}, "AVB_TLS_CERT_FILE"},
		{"drain longer than shutdown", map[string]string{"AVB_STREAM_DRAIN_TIMEOUT": "40s", "AVB_SHUTDOWN_TIMEOUT": "30s"}, "AVB_STREAM_DRAIN_TIMEOUT"},
		{"min above max conns", map[string]string{"AVB_DATABASE_MIN_CONNS": "30", "AVB_DATABASE_MAX_CONNS": "10"}, "AVB_DATABASE_MIN_CONNS"},
		{"internal errors in prod", map[string]string{"AVB_EXPOSE_INTERNAL_ERRORS": "true"}, "AVB_EXPOSE_INTERNAL_ERRORS"},
		{"dev issuer in prod", map[string]string{"AVB_OIDC_DEV_ISSUER": "true"}, "AVB_OIDC_DEV_ISSUER"},
		{"migrate on start without owner url", map[string]string{"AVB_DATABASE_MIGRATE_ON_START": "true"}, "AVB_DATABASE_MIGRATION_URL"},
		{"unknown profile", map[string]string{"AVB_PROFILE": "staging", "AVB_DATABASE_URL": ""}, "AVB_PROFILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := prodEnv()
			maps.Copy(env, tt.set)
			_, err := config.Load(lookupIn(env))
			var cerr *config.Error
			if !errors.As(err, &cerr) || !slices.Equal(cerr.Vars(), []string{tt.want}) {
				t.Fatalf("want exactly %s named, got %v", tt.want, err)
			}
		})
	}
}

func TestSecretsAreRedacted(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load(lookupIn(prodEnv()))
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, v := range config.Vars(cfg) {
		all.WriteString(v.Name + "=" + v.Value() + "\n")
	}
	for _, secret := range []string{"s3cret", "hunter2", "prod-preshared-key"} {
		if strings.Contains(all.String(), secret) {
			t.Fatalf("secret %q printed:\n%s", secret, all.String())
		}
	}
	if !strings.Contains(all.String(), "db.internal:5432") {
		t.Fatalf("redaction hid the database host:\n%s", all.String())
	}
}

// .env.example must list every variable the config reads, and nothing else.
func TestEnvExampleMatchesConfig(t *testing.T) {
	t.Parallel()
	got, err := os.ReadFile("../../.env.example")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != config.Example() {
		t.Fatal(".env.example is out of date: run  go run ./cmd/avb config example > .env.example")
	}
	for _, v := range config.Vars(&config.Config{}) {
		if !strings.Contains(string(got), "\n"+v.Name+"=") {
			t.Errorf(".env.example lacks %s", v.Name)
		}
		if v.Desc == "" {
			t.Errorf("%s has no description", v.Name)
		}
	}
}

// The development issuer lives on this server, so its URL follows the listen
// address unless AVB_OIDC_ISSUER_URL says otherwise.
func TestDevIssuerFollowsTheListenAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "http://127.0.0.1:8080/dev/oidc/realms/avb"},
		{map[string]string{"AVB_HTTP_ADDR": ":9090"}, "http://127.0.0.1:9090/dev/oidc/realms/avb"},
		{map[string]string{"AVB_HTTP_ADDR": "localhost:7000"}, "http://localhost:7000/dev/oidc/realms/avb"},
		{map[string]string{"AVB_HTTP_ADDR": ":9090", "AVB_OIDC_ISSUER_URL": "https://id.example.com/realms/avb"}, "https://id.example.com/realms/avb"},
		{map[string]string{"AVB_HTTP_ADDR": "127.0.0.1:0"}, "http://127.0.0.1:8080/dev/oidc/realms/avb"}, // port unknown yet: the default
	} {
		cfg, err := config.Load(lookupIn(tc.env))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Auth.OIDCIssuerURL != tc.want {
			t.Errorf("%v: issuer %s, want %s", tc.env, cfg.Auth.OIDCIssuerURL, tc.want)
		}
	}
}

// A prod server with Vault needs no secret in its environment, and is told
// plainly which one is missing when Vault lacks it; what Vault holds
// overrides the environment and is validated like it.
func TestProdSecretsFromVault(t *testing.T) {
	t.Parallel()
	env := prodEnv()
	delete(env, "AVB_CLIENT_TOKEN_SECRET")
	maps.Copy(env, map[string]string{"AVB_VAULT_ADDR": "https://vault.internal:8200", "AVB_VAULT_ROLE_ID": "r",
		"AVB_VAULT_SECRET_ID_FILE": "/dev/null", "AVB_LAGO_URL": "https://api.getlago.com"})
	cfg, err := config.Load(lookupIn(env))
	if err != nil {
		t.Fatalf("a prod config with Vault needs its secrets in the environment: %v", err)
	}
	var cerr *config.Error
	err = config.ApplyVault(cfg, map[string]string{"openai_api_key": "sk"})
	if !errors.As(err, &cerr) || !slices.Equal(cerr.Vars(), []string{"AVB_CLIENT_TOKEN_SECRET", "AVB_LAGO_API_KEY"}) ||
		!strings.Contains(err.Error(), "client_token_secret") {
		t.Fatalf("missing secrets not named: %v", err)
	}
	if err := config.ApplyVault(cfg, map[string]string{"client_token_secret": "short"}); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Fatalf("a short secret from Vault accepted: %v", err)
	}
	if err := config.ApplyVault(cfg, map[string]string{"client_token_secret": strings.Repeat("k", 32), "lago_api_key": "lk"}); err != nil {
		t.Fatal(err)
	}
	if cfg.Auth.ClientTokenKey != strings.Repeat("k", 32) || cfg.Billing.LagoAPIKey != "lk" || cfg.Voice.OpenAIKey != "sk" {
		t.Fatal("the secrets from Vault are not in the configuration")
	}
	// Without Vault, the environment must hold them.
	delete(env, "AVB_VAULT_ADDR")
	delete(env, "AVB_VAULT_ROLE_ID")
	delete(env, "AVB_VAULT_SECRET_ID_FILE")
	if _, err := config.Load(lookupIn(env)); !errors.As(err, &cerr) || !slices.Contains(cerr.Vars(), "AVB_CLIENT_TOKEN_SECRET") {
		t.Fatalf("no client-token secret anywhere accepted: %v", err)
	}
}
