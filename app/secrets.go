package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/platform/secret"
	"github.com/agentvoicebox/avb/platform/vault"
	"github.com/agentvoicebox/avb/server"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

// Secrets are the platform's secrets. Without Vault they are the
// environment's, fixed. With AVB_VAULT_ADDR they are read from Vault at
// start and again every AVB_VAULT_SECRETS_TTL, so a new version of the KV
// secret is used without a restart; and with AVB_VAULT_DATABASE_ROLE the
// database pool logs in with credentials leased from Vault.
type Secrets struct {
	OpenAI      *secret.Value // AVB_OPENAI_API_KEY
	LagoAPI     *secret.Value // AVB_LAGO_API_KEY
	LagoWebhook *secret.Value // AVB_LAGO_WEBHOOK_SECRET (grace on rotation)
	ClientToken *secret.Value // AVB_CLIENT_TOKEN_SECRET (grace on rotation)

	cfg      *config.Config
	log      *slog.Logger
	vault    *vault.Client   // nil without Vault
	kv       *vault.KV       // nil without Vault
	Database *vault.Database // nil without AVB_VAULT_DATABASE_ROLE
	// Certificates is the server's TLS certificate (nil without
	// AVB_VAULT_PKI_ROLE).
	Certificates *vault.Certificates
	// Transit encrypts tenant secrets (nil without AVB_VAULT_TRANSIT_KEY).
	Transit *vault.Transit

	mu      sync.Mutex
	version int       // of the KV secret last read
	readAt  time.Time // when it was last read
	readErr error     // of the last read that failed, until one succeeds
}

// OpenSecrets gathers the secrets of cfg. With Vault configured it logs in,
// reads avb's KV secret into cfg (ApplyVault) and leases the database
// credentials, and fails with one clear message when it cannot: a server
// that starts without its secrets would fail every request instead.
func OpenSecrets(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Secrets, error) {
	s := &Secrets{cfg: cfg, log: log}
	if cfg.Vault.Addr != "" {
		started := time.Now()
		if err := s.openVault(ctx); err != nil {
			return nil, fmt.Errorf("cannot start without Vault at %s: %w", cfg.Vault.Addr, err)
		}
		log.Info("secrets read from Vault", "kv", cfg.Vault.KVMount+"/"+cfg.Vault.KVPath, "version", s.version,
			"database_role", cfg.Vault.DatabaseRole, "took_ms", time.Since(started).Milliseconds())
	}
	s.OpenAI = secret.New(cfg.Voice.OpenAIKey)
	s.LagoAPI = secret.New(cfg.Billing.LagoAPIKey)
	s.LagoWebhook = secret.New(cfg.Billing.WebhookSecret)
	s.ClientToken = secret.New(cfg.Auth.ClientTokenKey)
	return s, nil
}

func (s *Secrets) openVault(ctx context.Context) error {
	vc := s.cfg.Vault
	c, err := vault.Login(ctx, vault.Config{Address: vc.Addr, RoleID: vc.RoleID, SecretIDFile: vc.SecretIDFile,
		AuthMount: vc.AuthMount, Timeout: vc.Timeout, Log: s.log.With("component", "vault")})
	if err != nil {
		return err
	}
	s.vault, s.kv = c, c.KV(vc.KVMount, vc.SecretsTTL)
	data, version, err := s.kv.Read(ctx, vc.KVPath)
	if err != nil {
		return err
	}
	if err := config.ApplyVault(s.cfg, fields(data)); err != nil {
		return err
	}
	s.version, s.readAt = version, time.Now()
	if vc.DatabaseRole != "" {
		s.Database = c.Database(vc.DatabaseMount, vc.DatabaseRole)
		if err := s.Database.Lease(ctx); err != nil {
			return err
		}
	}
	if vc.TransitKey != "" {
		s.Transit = c.Transit(vc.TransitMount, vc.TransitKey)
		s.Transit.CacheTTL = vc.TransitCache
		if _, err := s.Transit.LatestVersion(ctx); err != nil {
			return err
		}
	}
	if vc.PKIRole != "" {
		s.Certificates = c.Certificates(vc.PKIMount, vc.PKIRole, vault.CertificateRequest{
			CommonName: vc.PKICommonName, AltNames: vc.PKIAltNames, TTL: vc.PKITTL})
		if err := s.Certificates.Issue(ctx); err != nil {
			return err
		}
	}
	return nil
}

// GetCertificate serves the certificate from Vault's PKI (nil without one).
func (s *Secrets) GetCertificate() func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if s.Certificates == nil {
		return nil
	}
	return s.Certificates.GetCertificate
}

// fields keeps the text fields of a KV secret.
func fields(data map[string]any) map[string]string {
	out := make(map[string]string, len(data))
	for k, v := range data {
		if str, ok := v.(string); ok {
			out[k] = str
		}
	}
	return out
}

// StoreOptions are the options of the server's database pool.
func (s *Secrets) StoreOptions() []store.Option {
	if s.Database == nil {
		return nil
	}
	return []store.Option{store.Credentials(s.Database.Current)}
}

// Run keeps the Vault token, the secrets and the database lease current
// until ctx ends; db's connections move to each new database credential.
func (s *Secrets) Run(ctx context.Context, db *store.DB) {
	if s.vault == nil {
		return
	}
	go s.vault.Run(ctx)
	if s.Database != nil {
		go s.Database.Run(ctx, db.RetireConnections)
	}
	if s.Certificates != nil {
		go s.Certificates.Run(ctx)
	}
	if s.Transit != nil {
		go s.rewrapEvery(ctx, db)
	}
	every(ctx, s.cfg.Vault.SecretsTTL, func() { s.Refresh(ctx) })
}

// every calls fn every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// values maps each variable that may come from Vault to its Value, and to
// the grace the replaced value keeps.
func (s *Secrets) values() map[string]struct {
	v     *secret.Value
	grace time.Duration
} {
	type entry = struct {
		v     *secret.Value
		grace time.Duration
	}
	g := s.cfg.Vault.RotationGrace
	return map[string]entry{
		"AVB_OPENAI_API_KEY":      {s.OpenAI, 0},
		"AVB_LAGO_API_KEY":        {s.LagoAPI, 0},
		"AVB_LAGO_WEBHOOK_SECRET": {s.LagoWebhook, g},
		"AVB_CLIENT_TOKEN_SECRET": {s.ClientToken, g},
	}
}

// Refresh reads avb's KV secret again and makes its values current. When
// Vault does not answer, the values read before stay (Degraded says so).
func (s *Secrets) Refresh(ctx context.Context) {
	data, version, err := s.kv.Read(ctx, s.cfg.Vault.KVPath)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.readErr == nil {
			s.log.Warn("secrets not refreshed from Vault; the ones read before stay in use", "error", err.Error())
		}
		s.readErr = err
		return
	}
	s.readErr, s.readAt = nil, time.Now()
	if version == s.version {
		return
	}
	// A check on a copy: a new version that is invalid (a client-token
	// secret too short) is refused whole, and the current values stay.
	probe := *s.cfg
	if err := config.ApplyVault(&probe, fields(data)); err != nil {
		s.log.Error("new version of the Vault secret refused; the current one stays in use", "version", version, "error", err.Error())
		return
	}
	f := fields(data)
	var changed []string
	for name, e := range s.values() {
		if raw, ok := f[config.VaultField(name)]; ok && raw != "" && e.v.Set(raw, e.grace) {
			changed = append(changed, name)
		}
	}
	s.version = version
	s.log.Info("secrets refreshed from Vault", "version", version, "changed", changed)
}

// Degraded says why the secrets in use may be out of date ("" when they
// are not), for readiness.
func (s *Secrets) Degraded() string {
	if s.vault == nil {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.readErr == nil {
		return ""
	}
	return fmt.Sprintf("the secrets in use were read from Vault at %s (version %d); it does not answer or refuses to read them again",
		s.readAt.UTC().Format(time.RFC3339), s.version)
}

// Sealer is the encrypter of tenant secrets (nil without Transit).
func (s *Secrets) Sealer() server.Sealer {
	if s.Transit == nil {
		return nil
	}
	return s.Transit
}

// TenantKey returns the tenant's own secret name (decrypted; cached for
// AVB_VAULT_TRANSIT_CACHE_TTL), or "" when it has none. When Vault does not
// answer, the error is unavailable: only the calls that need it fail.
func (s *Secrets) TenantKey(ctx context.Context, db *store.DB, name string) (string, error) {
	tenantID, ok := tenancy.ID(ctx)
	if s.Transit == nil || !ok {
		return "", nil
	}
	row, err := db.TenantSecrets().Get(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return s.open(ctx, tenantID, row)
}

// open decrypts a tenant's secret; Vault not answering is unavailable.
func (s *Secrets) open(ctx context.Context, tenantID uuid.UUID, row *store.TenantSecret) (string, error) {
	plain, err := s.Transit.Decrypt(ctx, row.Ciphertext, tenantID.String())
	if err != nil {
		s.log.WarnContext(ctx, "tenant secret not decrypted: the secret store does not answer", "name", row.Name, "error", err.Error())
		return "", server.SecretStoreUnavailable()
	}
	return string(plain), nil
}

// WebhookSecrets returns the tenant's webhook signing secrets: the current
// one, and the one it replaced while that is in its grace period.
func (s *Secrets) WebhookSecrets(db *store.DB) func(ctx context.Context) ([]string, error) {
	const name = "webhook_signing_secret"
	return func(ctx context.Context) ([]string, error) {
		if s.Transit == nil {
			return nil, errors.New("webhook tools sign their calls with a tenant secret, and this server has no secret store (Vault Transit)")
		}
		tenantID, ok := tenancy.ID(ctx)
		if !ok {
			return nil, errors.New("no tenant")
		}
		rows, err := db.TenantSecrets().List(ctx) // one read for the current and the previous
		if err != nil {
			return nil, err
		}
		var cur, prev *store.TenantSecret
		for i := range rows {
			switch rows[i].Name {
			case name:
				cur = &rows[i]
			case name + store.PreviousSuffix:
				prev = &rows[i]
			}
		}
		if cur == nil {
			return nil, nil
		}
		var out []string
		for _, row := range []*store.TenantSecret{cur, prev} {
			if row == nil || (row == prev && time.Since(row.UpdatedAt) >= server.WebhookSecretGrace) {
				continue
			}
			plain, err := s.open(ctx, tenantID, row)
			if err != nil {
				return nil, err
			}
			out = append(out, plain)
		}
		return out, nil
	}
}

// rewrapEvery rewraps the tenant secrets made under an older version of the
// Transit key, every AVB_VAULT_TRANSIT_REWRAP_EVERY.
func (s *Secrets) rewrapEvery(ctx context.Context, db *store.DB) {
	every(ctx, s.cfg.Vault.RewrapEvery, func() {
		if n, err := s.RewrapTenantSecrets(ctx, db); err != nil {
			s.log.Warn("tenant secrets not rewrapped; next try later", "rewrapped", n, "error", err.Error())
		} else if n > 0 {
			s.log.Info("tenant secrets rewrapped to the newest Transit key", "rewrapped", n)
		}
	})
}

// RewrapTenantSecrets moves every tenant secret to the Transit key's newest
// version (the plaintext never leaves Vault), tenant by tenant, and returns
// how many it rewrapped. Safe while serving and from several instances: a
// secret changed meanwhile is left as it is.
func (s *Secrets) RewrapTenantSecrets(ctx context.Context, db *store.DB) (int, error) {
	latest, err := s.Transit.LatestVersion(ctx)
	if err != nil {
		return 0, err
	}
	tenants, err := db.TenantsToRewrap(ctx, latest)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, id := range tenants {
		tctx := tenancy.With(ctx, id)
		n, err := db.TenantSecrets().Rewrap(tctx, latest, func(c string) (string, int, error) {
			return s.Transit.Rewrap(tctx, c, id.String())
		})
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}
