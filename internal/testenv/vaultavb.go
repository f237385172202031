package testenv

import (
	"context"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// VaultSetup is one avb set up in the shared Vault dev server the way
// deploy/vault describes: an AppRole login under a policy of deploy/vault,
// its KV secret, and (with a database) a database secrets engine role
// leasing users of the avb_app role. Each test gets its own paths and
// names, so the policy is the file's with those paths put in.
type VaultSetup struct {
	Addr string
	// Admin is a root client, for changing what avb reads.
	Admin *vault.Client
	// KVPath is avb's KV secret (in mount "secret").
	KVPath string
	// DBRole is the database role (empty without a database).
	DBRole string
	// CA is the PEM of the PKI engine's CA (with CertTTL).
	CA string
	// TransitKey is avb's Transit key (with Transit).
	TransitKey string
	// Env is the AVB_VAULT_* settings of an avb using this setup.
	Env map[string]string

	pkiRole string
}

// VaultOptions say what VaultAvb sets up.
type VaultOptions struct {
	// Policy is a file of deploy/vault (default avb.hcl).
	Policy string
	// Owner is the schema owner's URL of the database avb uses; empty: no
	// database role.
	Owner string
	// LeaseTTL and LeaseMaxTTL bound the database leases (default 1h, 24h).
	LeaseTTL, LeaseMaxTTL time.Duration
	// Secrets is the first version of avb's KV secret.
	Secrets map[string]any
	// CertTTL, when set, has a PKI role issue avb's TLS certificate for
	// localhost and 127.0.0.1 with this lifetime.
	CertTTL time.Duration
	// Transit, when set, creates avb's derived Transit key for tenant
	// secrets.
	Transit bool
}

var vaultMounts sync.Once

// VaultAvb sets up an avb in the shared Vault dev server.
func VaultAvb(t testing.TB, o VaultOptions) *VaultSetup {
	t.Helper()
	addr, token := Vault(t)
	cfg := vault.DefaultConfig()
	cfg.Address, cfg.Timeout, cfg.MaxRetries = addr, 10*time.Second, 0
	admin, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	admin.SetToken(token)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("vault setup: %s: %v", what, err)
		}
	}
	vaultMounts.Do(func() {
		// Enabled once per test binary; another test of the binary may
		// have enabled them already.
		mounts, err := admin.Sys().ListMountsWithContext(ctx)
		must("list mounts", err)
		if _, ok := mounts["database/"]; !ok {
			must("enable database", admin.Sys().MountWithContext(ctx, "database", &vault.MountInput{Type: "database"}))
		}
		if _, ok := mounts["transit/"]; !ok {
			must("enable transit", admin.Sys().MountWithContext(ctx, "transit", &vault.MountInput{Type: "transit"}))
		}
		if _, ok := mounts["pki/"]; !ok {
			must("enable pki", admin.Sys().MountWithContext(ctx, "pki", &vault.MountInput{Type: "pki", Config: vault.MountConfigInput{MaxLeaseTTL: "87600h"}}))
			_, err := admin.Logical().WriteWithContext(ctx, "pki/root/generate/internal", map[string]any{"common_name": "avb test CA", "ttl": "87600h"})
			must("generate the test CA", err)
		}
		auths, err := admin.Sys().ListAuthWithContext(ctx)
		must("list auth", err)
		if _, ok := auths["approle/"]; !ok {
			must("enable approle", admin.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &vault.EnableAuthOptions{Type: "approle"}))
		}
	})
	id := randomSuffix()
	s := &VaultSetup{Addr: addr, Admin: admin, KVPath: "avb-" + id + "/platform"}
	policyFile := o.Policy
	if policyFile == "" {
		policyFile = "avb.hcl"
	}
	raw, err := os.ReadFile(filepath.Join(RepoRoot(), "deploy", "vault", policyFile))
	must("read policy", err)
	policy := strings.ReplaceAll(string(raw), "secret/data/avb/platform", "secret/data/"+s.KVPath)
	if o.Owner != "" {
		s.DBRole = "avb-app-" + id
		policy = strings.ReplaceAll(policy, "database/creds/avb-app", "database/creds/"+s.DBRole)
	}
	if o.CertTTL > 0 {
		pkiRole := "avb-server-" + id
		policy = strings.ReplaceAll(policy, "pki/issue/avb-server", "pki/issue/"+pkiRole)
		_, err := admin.Logical().WriteWithContext(ctx, "pki/roles/"+pkiRole, map[string]any{
			"allowed_domains": "localhost", "allow_bare_domains": true, "allow_localhost": true, "allow_ip_sans": true,
			"max_ttl": int(o.CertTTL.Seconds()), "not_before_duration": "5s", "key_type": "ec", "key_bits": 256})
		must("create the pki role", err)
		ca, err := admin.Logical().ReadRawWithContext(ctx, "pki/ca/pem")
		must("read the CA", err)
		pem, err := io.ReadAll(ca.Body)
		ca.Body.Close()
		must("read the CA", err)
		s.CA = string(pem)
		s.pkiRole = pkiRole
	}
	if o.Transit {
		s.TransitKey = "avb-tenant-secrets-" + id
		policy = strings.ReplaceAll(policy, "/avb-tenant-secrets\"", "/"+s.TransitKey+"\"")
		_, err := admin.Logical().WriteWithContext(ctx, "transit/keys/"+s.TransitKey, map[string]any{"derived": true})
		must("create the transit key", err)
	}
	must("write policy", admin.Sys().PutPolicyWithContext(ctx, "avb-"+id, policy))
	if o.Secrets != nil {
		_, err := admin.KVv2("secret").Put(ctx, s.KVPath, o.Secrets)
		must("write kv", err)
	}
	if o.Owner != "" {
		u, err := url.Parse(o.Owner)
		must("parse owner url", err)
		ttl, maxTTL := o.LeaseTTL, o.LeaseMaxTTL
		if ttl == 0 {
			ttl, maxTTL = time.Hour, 24*time.Hour
		}
		conn := "db-" + id
		_, err = admin.Logical().WriteWithContext(ctx, "database/config/"+conn, map[string]any{
			"plugin_name":    "postgresql-database-plugin",
			"connection_url": "postgresql://{{username}}:{{password}}@" + u.Host + u.Path + "?sslmode=disable",
			"username":       u.User.Username(), "password": "unused-with-trust",
			"allowed_roles": s.DBRole, "verify_connection": true,
		})
		must("configure the database connection", err)
		// Leased users are members of avb_app: its grants, and still no
		// superuser and no BYPASSRLS, so row-level security applies.
		_, err = admin.Logical().WriteWithContext(ctx, "database/roles/"+s.DBRole, map[string]any{
			"db_name": conn,
			"creation_statements": []string{`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' ` +
				`NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE INHERIT IN ROLE avb_app;`},
			"revocation_statements": []string{`DROP ROLE IF EXISTS "{{name}}";`},
			"default_ttl":           int(ttl.Seconds()), "max_ttl": int(maxTTL.Seconds()),
		})
		must("create the database role", err)
		t.Cleanup(func() {
			// After avb stopped (cleanups run last first): its leased users
			// are dropped, not left in the cluster.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := admin.Logical().WriteWithContext(ctx, "sys/leases/revoke-prefix/database/creds/"+s.DBRole, nil); err != nil {
				t.Logf("revoke the database leases: %v", err)
			}
			_, _ = admin.Logical().DeleteWithContext(ctx, "database/config/"+conn)
		})
	}
	role := "avb-" + id
	_, err = admin.Logical().WriteWithContext(ctx, "auth/approle/role/"+role, map[string]any{
		"token_policies": []string{role}, "token_ttl": "1h", "token_max_ttl": "4h"})
	must("create the approle role", err)
	rid, err := admin.Logical().ReadWithContext(ctx, "auth/approle/role/"+role+"/role-id")
	must("read the role id", err)
	sid, err := admin.Logical().WriteWithContext(ctx, "auth/approle/role/"+role+"/secret-id", nil)
	must("create a secret id", err)
	file := filepath.Join(t.TempDir(), "secret-id")
	must("write the secret id", os.WriteFile(file, []byte(sid.Data["secret_id"].(string)), 0o600))
	s.Env = map[string]string{
		"AVB_VAULT_ADDR":           addr,
		"AVB_VAULT_ROLE_ID":        rid.Data["role_id"].(string),
		"AVB_VAULT_SECRET_ID_FILE": file,
		"AVB_VAULT_KV_PATH":        s.KVPath,
		"AVB_VAULT_DATABASE_ROLE":  s.DBRole,
	}
	if s.TransitKey != "" {
		s.Env["AVB_VAULT_TRANSIT_KEY"] = s.TransitKey
	}
	if s.pkiRole != "" {
		s.Env["AVB_VAULT_PKI_ROLE"] = s.pkiRole
		s.Env["AVB_VAULT_PKI_COMMON_NAME"] = "localhost"
		s.Env["AVB_VAULT_PKI_ALT_NAMES"] = "127.0.0.1"
		s.Env["AVB_VAULT_PKI_TTL"] = o.CertTTL.String()
	}
	return s
}

// PutSecrets writes a new version of avb's KV secret.
func (s *VaultSetup) PutSecrets(t testing.TB, data map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Admin.KVv2("secret").Put(ctx, s.KVPath, data); err != nil {
		t.Fatalf("vault: write %s: %v", s.KVPath, err)
	}
}
