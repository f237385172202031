// Package vault is avb's session with HashiCorp Vault: an AppRole login
// kept alive (renewed, and logged in again when renewal fails or the token
// reaches its maximum TTL), and KV v2 reads cached for a while and served
// stale while Vault does not answer. Every call has a deadline.
package vault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// Config says where Vault is and how avb logs in.
type Config struct {
	Address string
	// RoleID and the file holding the secret id (re-read at each login, so
	// a rotated secret id is picked up).
	RoleID       string
	SecretIDFile string
	// AuthMount is where AppRole is enabled (empty: approle).
	AuthMount string
	// Timeout bounds each call to Vault.
	Timeout time.Duration
	Log     *slog.Logger
}

// Client is a logged-in Vault session.
type Client struct {
	cfg Config
	api *vault.Client

	mu     sync.Mutex
	secret *vault.Secret // the last login's
	logins int
}

// Login logs in with AppRole.
func Login(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.AuthMount == "" {
		cfg.AuthMount = "approle"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	vc := vault.DefaultConfig()
	vc.Address, vc.Timeout, vc.MaxRetries = cfg.Address, cfg.Timeout, 0
	api, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	api.ClearToken()
	c := &Client{cfg: cfg, api: api}
	if err := c.login(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// API is the underlying client, carrying the current token.
func (c *Client) API() *vault.Client { return c.api }

// Logins counts the logins so far (the first included).
func (c *Client) Logins() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.logins
}

func (c *Client) login(ctx context.Context) error {
	raw, err := os.ReadFile(c.cfg.SecretIDFile)
	if err != nil {
		return fmt.Errorf("vault: read the AppRole secret id: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	s, err := c.api.Logical().WriteWithContext(ctx, "auth/"+c.cfg.AuthMount+"/login", map[string]any{
		"role_id": c.cfg.RoleID, "secret_id": strings.TrimSpace(string(raw))})
	if err != nil {
		return fmt.Errorf("vault: AppRole login: %w", err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return errors.New("vault: AppRole login returned no token")
	}
	c.api.SetToken(s.Auth.ClientToken)
	c.mu.Lock()
	c.secret = s
	c.logins++
	c.mu.Unlock()
	return nil
}

// Run keeps the token alive until ctx ends: it renews it as Vault allows,
// and logs in again when renewal fails or the token reaches its maximum
// TTL (retrying with backoff while Vault does not answer).
func (c *Client) Run(ctx context.Context) {
	for ctx.Err() == nil {
		c.mu.Lock()
		s := c.secret
		c.mu.Unlock()
		w, err := c.api.NewLifetimeWatcher(&vault.LifetimeWatcherInput{Secret: s, RenewBehavior: vault.RenewBehaviorIgnoreErrors})
		if err != nil {
			c.cfg.Log.Error("vault token cannot be renewed", "error", err.Error())
		} else {
			go w.Start()
			c.watch(ctx, w)
			w.Stop()
		}
		for delay := 200 * time.Millisecond; ctx.Err() == nil; delay = min(2*delay, 30*time.Second) {
			if err := c.login(ctx); err == nil {
				break
			} else {
				c.cfg.Log.Warn("vault login failed; retrying", "error", err.Error(), "in", delay.String())
			}
			select {
			case <-ctx.Done():
			case <-time.After(delay):
			}
		}
	}
}

// watch returns when the token can no longer be renewed or ctx ends.
func (c *Client) watch(ctx context.Context, w *vault.LifetimeWatcher) {
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-w.DoneCh():
			if err != nil {
				c.cfg.Log.Warn("vault token renewal stopped; logging in again", "error", err.Error())
			}
			return
		case <-w.RenewCh():
		}
	}
}

// KV reads secrets of a KV v2 mount, each cached for TTL; past it a read
// asks Vault again, and serves the value it has (logging) when Vault does
// not answer.
type KV struct {
	c     *Client
	mount string
	ttl   time.Duration

	mu    sync.Mutex
	cache map[string]kvEntry
}

type kvEntry struct {
	data    map[string]any
	version int
	at      time.Time
}

// KV returns the KV v2 mount's reader with the given cache lifetime.
func (c *Client) KV(mount string, ttl time.Duration) *KV {
	return &KV{c: c, mount: mount, ttl: ttl, cache: map[string]kvEntry{}}
}

// Get returns the secret at path and its version.
func (k *KV) Get(ctx context.Context, path string) (map[string]any, int, error) {
	k.mu.Lock()
	e, ok := k.cache[path]
	k.mu.Unlock()
	if ok && time.Since(e.at) < k.ttl {
		return e.data, e.version, nil
	}
	data, version, err := k.Read(ctx, path)
	if err != nil {
		if ok && !errors.Is(err, vault.ErrSecretNotFound) {
			k.c.cfg.Log.Warn("vault did not answer; serving the secret read before", "path", path, "version", e.version, "error", err.Error())
			return e.data, e.version, nil
		}
		return nil, 0, err
	}
	return data, version, nil
}

// Read asks Vault for the secret at path (its latest version), whatever
// the cache holds, and caches what it gets.
func (k *KV) Read(ctx context.Context, path string) (map[string]any, int, error) {
	rctx, cancel := context.WithTimeout(ctx, k.c.cfg.Timeout)
	defer cancel()
	s, err := k.c.api.KVv2(k.mount).Get(rctx, path)
	if err != nil {
		return nil, 0, fmt.Errorf("vault: read %s/%s: %w", k.mount, path, err)
	}
	e := kvEntry{data: s.Data, version: s.VersionMetadata.Version, at: time.Now()}
	k.mu.Lock()
	k.cache[path] = e
	k.mu.Unlock()
	return e.data, e.version, nil
}
