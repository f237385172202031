package vault_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/vault"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var quiet = slog.New(slog.DiscardHandler)

// appRole enables AppRole at a mount of the test's own with a role of the
// given token TTLs, and returns avb's config for it (addr may be a faulty
// link in front of Vault).
func appRole(t *testing.T, addr, ttl, maxTTL string) (vault.Config, *vaultapi.Client) {
	t.Helper()
	real, token := testenv.Vault(t)
	cfg := vaultapi.DefaultConfig()
	cfg.Address = real
	root, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	root.SetToken(token)
	ctx := context.Background()
	mount := "approle-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	if err := root.Sys().EnableAuthWithOptionsWithContext(ctx, mount, &vaultapi.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().WriteWithContext(ctx, "sys/policies/acl/avb-read", map[string]any{
		"policy": `path "secret/data/*" { capabilities = ["read"] }`}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().WriteWithContext(ctx, "auth/"+mount+"/role/avb", map[string]any{
		"token_ttl": ttl, "token_max_ttl": maxTTL, "token_policies": "avb-read"}); err != nil {
		t.Fatal(err)
	}
	role, err := root.Logical().ReadWithContext(ctx, "auth/"+mount+"/role/avb/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := root.Logical().WriteWithContext(ctx, "auth/"+mount+"/role/avb/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(file, []byte(sid.Data["secret_id"].(string)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if addr == "" {
		addr = real
	}
	return vault.Config{Address: addr, RoleID: role.Data["role_id"].(string), SecretIDFile: file, AuthMount: mount,
		Timeout: 500 * time.Millisecond, Log: quiet}, root
}

// The token is renewed, and once it reaches its maximum TTL avb logs in
// again: reads keep working long past the token's lifetime.
func TestLoginKeepsTheTokenAlive(t *testing.T) {
	cfg, root := appRole(t, "", "2s", "4s")
	if _, err := root.KVv2("secret").Put(context.Background(), "avb/alive", map[string]any{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	c, err := vault.Login(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	kv := c.KV("secret", 0)
	for deadline := time.Now().Add(9 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		if _, _, err := kv.Get(context.Background(), "avb/alive"); err != nil {
			t.Fatalf("after %d logins: %v", c.Logins(), err)
		}
	}
	if c.Logins() < 2 {
		t.Fatalf("%d logins in 9 s with a 4 s maximum TTL", c.Logins())
	}
}

// A secret is cached for its TTL, a new version is read after it, and
// while Vault is silent or refusing the last value is served within the
// call's deadline; a secret never read fails within it.
func TestKVCachesAndServesStaleWhileVaultFails(t *testing.T) {
	real, _ := testenv.Vault(t)
	link := testenv.FaultyLink(t, "vault", strings.TrimPrefix(real, "http://"))
	cfg, root := appRole(t, "http://"+link.Addr(), "1h", "2h")
	ctx := context.Background()
	put := func(v string) {
		if _, err := root.KVv2("secret").Put(ctx, "avb/lago", map[string]any{"api_key": v}); err != nil {
			t.Fatal(err)
		}
	}
	put("k1")
	c, err := vault.Login(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	kv := c.KV("secret", 300*time.Millisecond)
	get := func() (string, int, time.Duration, error) {
		start := time.Now()
		d, v, err := kv.Get(ctx, "avb/lago")
		if err != nil {
			return "", 0, time.Since(start), err
		}
		return d["api_key"].(string), v, time.Since(start), nil
	}
	if s, v, _, err := get(); err != nil || s != "k1" {
		t.Fatalf("first read: %q v%d %v", s, v, err)
	}
	put("k2")
	if s, _, _, _ := get(); s != "k1" {
		t.Fatalf("within the cache's lifetime: %q", s)
	}
	time.Sleep(350 * time.Millisecond)
	if s, v, _, err := get(); err != nil || s != "k2" || v < 2 {
		t.Fatalf("a new version after the cache's lifetime: %q v%d %v", s, v, err)
	}
	for _, f := range []testenv.Fault{testenv.Blackhole, testenv.Refused} {
		link.Inject(f, 0)
		time.Sleep(350 * time.Millisecond)
		s, _, took, err := get()
		if err != nil || s != "k2" || took > cfg.Timeout+time.Second {
			t.Fatalf("vault %s: %q after %s, %v", f, s, took, err)
		}
		start := time.Now()
		if _, _, err := kv.Get(ctx, "avb/never-read"); err == nil || time.Since(start) > cfg.Timeout+time.Second {
			t.Fatalf("vault %s: a secret never read: %v after %s", f, err, time.Since(start))
		}
		link.Heal()
	}
}

// Logging in while Vault is silent or refusing fails within the deadline.
func TestLoginWhileVaultFails(t *testing.T) {
	real, _ := testenv.Vault(t)
	link := testenv.FaultyLink(t, "vault-login", strings.TrimPrefix(real, "http://"))
	cfg, _ := appRole(t, "http://"+link.Addr(), "1h", "2h")
	for _, f := range []testenv.Fault{testenv.Blackhole, testenv.Refused} {
		link.Inject(f, 0)
		start := time.Now()
		if _, err := vault.Login(context.Background(), cfg); err == nil || time.Since(start) > cfg.Timeout+time.Second {
			t.Fatalf("login with vault %s: %v after %s", f, err, time.Since(start))
		}
		link.Heal()
	}
	if _, err := vault.Login(context.Background(), cfg); err != nil {
		t.Fatalf("login once vault is back: %v", err)
	}
}
