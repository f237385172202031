package testenv_test

import (
	"context"
	"encoding/base64"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/agentvoicebox/avb/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The Vault tests start is the real server: KV v2, Transit and AppRole
// work as avb will use them.
func TestVaultDevServer(t *testing.T) {
	addr, token := testenv.Vault(t)
	cfg := vault.DefaultConfig()
	cfg.Address, cfg.Timeout = addr, 5*time.Second
	c, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	kv := c.KVv2("secret")
	if _, err := kv.Put(ctx, "avb/lago", map[string]any{"api_key": "k1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "avb/lago", map[string]any{"api_key": "k2"}); err != nil {
		t.Fatal(err)
	}
	s, err := kv.Get(ctx, "avb/lago")
	if err != nil || s.Data["api_key"] != "k2" || s.VersionMetadata.Version != 2 {
		t.Fatalf("kv: %+v %v", s, err)
	}

	if err := c.Sys().MountWithContext(ctx, "transit", &vault.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "transit/keys/tenant-secrets", nil); err != nil {
		t.Fatal(err)
	}
	plain := base64.StdEncoding.EncodeToString([]byte("sk-tenant-secret"))
	enc, err := c.Logical().WriteWithContext(ctx, "transit/encrypt/tenant-secrets", map[string]any{"plaintext": plain})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := c.Logical().WriteWithContext(ctx, "transit/decrypt/tenant-secrets", map[string]any{"ciphertext": enc.Data["ciphertext"]})
	if err != nil || dec.Data["plaintext"] != plain {
		t.Fatalf("transit: %+v %v", dec, err)
	}

	if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &vault.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "auth/approle/role/avb", map[string]any{"token_ttl": "1m", "token_max_ttl": "5m"}); err != nil {
		t.Fatal(err)
	}
	role, err := c.Logical().ReadWithContext(ctx, "auth/approle/role/avb/role-id")
	if err != nil {
		t.Fatal(err)
	}
	secret, err := c.Logical().WriteWithContext(ctx, "auth/approle/role/avb/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	login, err := c.Logical().WriteWithContext(ctx, "auth/approle/login", map[string]any{
		"role_id": role.Data["role_id"], "secret_id": secret.Data["secret_id"]})
	if err != nil || login.Auth == nil || login.Auth.ClientToken == "" || login.Auth.LeaseDuration != 60 {
		t.Fatalf("approle login: %+v %v", login, err)
	}
}
