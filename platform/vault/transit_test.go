package vault_test

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/vault"
)

// transit logs in as avb under deploy/vault/avb.hcl with its own derived
// Transit key.
func transit(t testing.TB) (*vault.Transit, *testenv.VaultSetup) {
	t.Helper()
	v := testenv.VaultAvb(t, testenv.VaultOptions{Transit: true})
	c, err := vault.Login(t.Context(), vault.Config{Address: v.Addr, RoleID: v.Env["AVB_VAULT_ROLE_ID"],
		SecretIDFile: v.Env["AVB_VAULT_SECRET_ID_FILE"], Timeout: 5 * time.Second, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return c.Transit("transit", v.TransitKey), v
}

// A ciphertext decrypts under the tenant it was made for and no other, and
// rewraps to the key's newest version after a rotation.
func TestTransitDerivedKeyAndRotation(t *testing.T) {
	tr, v := transit(t)
	ctx := t.Context()
	c, ver, err := tr.Encrypt(ctx, []byte("sk-tenant-one"), "tenant-1")
	if err != nil || ver != 1 {
		t.Fatalf("encrypt: %q v%d %v", c, ver, err)
	}
	if got, err := tr.Decrypt(ctx, c, "tenant-1"); err != nil || string(got) != "sk-tenant-one" {
		t.Fatalf("decrypt: %q %v", got, err)
	}
	if _, err := tr.Decrypt(ctx, c, "tenant-2"); err == nil {
		t.Fatal("a tenant's ciphertext decrypted under another tenant")
	}
	if _, err := v.Admin.Logical().WriteWithContext(ctx, "transit/keys/"+v.TransitKey+"/rotate", nil); err != nil {
		t.Fatal(err)
	}
	if latest, err := tr.LatestVersion(ctx); err != nil || latest != 2 {
		t.Fatalf("latest version %d %v", latest, err)
	}
	c2, ver, err := tr.Rewrap(ctx, c, "tenant-1")
	if err != nil || ver != 2 || c2 == c {
		t.Fatalf("rewrap: %q v%d %v", c2, ver, err)
	}
	if got, err := tr.Decrypt(ctx, c2, "tenant-1"); err != nil || string(got) != "sk-tenant-one" {
		t.Fatalf("decrypt the rewrapped: %q %v", got, err)
	}
	if n, err := vault.KeyVersion("plain text"); err == nil {
		t.Fatalf("KeyVersion of a plain text: %d", n)
	}
}

// BenchmarkTransitDecrypt is what a tenant secret costs a request: a round
// trip to Vault, or a cache hit.
func BenchmarkTransitDecrypt(b *testing.B) {
	tr, _ := transit(b)
	c, _, err := tr.Encrypt(b.Context(), []byte("sk-tenant-one"), "tenant-1")
	if err != nil {
		b.Fatal(err)
	}
	for _, ttl := range []time.Duration{0, time.Minute} {
		name := "vault"
		if ttl > 0 {
			name = "cached"
		}
		b.Run(name, func(b *testing.B) {
			tr.CacheTTL = ttl
			for b.Loop() {
				if _, err := tr.Decrypt(b.Context(), c, "tenant-1"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// deploy/vault/keycloak.hcl lets Keycloak read its own secrets and nothing
// of avb's; avb.hcl lets avb read nothing of Keycloak's.
func TestKeycloakPolicyIsItsOwn(t *testing.T) {
	v := testenv.VaultAvb(t, testenv.VaultOptions{Secrets: map[string]any{"openai_api_key": "sk"}})
	ctx := t.Context()
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "deploy", "vault", "keycloak.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Admin.Sys().PutPolicyWithContext(ctx, "keycloak-test", string(raw)); err != nil {
		t.Fatal(err)
	}
	tok, err := v.Admin.Auth().Token().CreateWithContext(ctx, &vaultapi.TokenCreateRequest{Policies: []string{"keycloak-test"}, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	kc, err := v.Admin.Clone()
	if err != nil {
		t.Fatal(err)
	}
	kc.SetToken(tok.Auth.ClientToken)
	if _, err := v.Admin.KVv2("secret").Put(ctx, "keycloak/db", map[string]any{"password": "kc"}); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.KVv2("secret").Get(ctx, "keycloak/db"); err != nil {
		t.Fatalf("keycloak cannot read its own secret: %v", err)
	}
	_, err = kc.KVv2("secret").Get(ctx, v.KVPath)
	var re *vaultapi.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusForbidden {
		t.Fatalf("keycloak reading avb's secret: %v, want 403", err)
	}
}
