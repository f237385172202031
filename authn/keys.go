package authn

import (
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/agentvoicebox/avb/platform/invalidation"
	"github.com/agentvoicebox/avb/server/middleware"
	"github.com/agentvoicebox/avb/store"
)

// Errors of API key verification.
var (
	ErrInvalidAPIKey = errors.New("invalid api key")
	ErrAPIKeyExpired = errors.New("api key expired")
	ErrAPIKeyRevoked = errors.New("api key revoked")
)

// KeyStore finds keys by hash and records their usage.
type KeyStore interface {
	ByHash(ctx context.Context, hash []byte) (*store.APIKeyAuth, error)
	RecordUsage(ctx context.Context, batch []store.Usage) error
}

// TopicAPIKey is the invalidation topic of API keys; keys are hex hashes.
const TopicAPIKey = "apikey"

// lookup is a cached verification result: the key, or nil for "no such key".
type lookup struct{ key *store.APIKeyAuth }

// APIKeys verifies API keys. Results (including "no such key", which keeps
// guessing floods off the database) are cached in process; revocation
// publishes an invalidation that reaches every instance within milliseconds.
type APIKeys struct {
	store KeyStore
	cache *invalidation.Cache[lookup]
	bus   *invalidation.Bus
	now   func() time.Time
}

// Observe counts each lookup as a cache hit or miss.
func (v *APIKeys) Observe(f func(hit bool)) { v.cache.Observe = f }

// NewAPIKeys returns a verifier caching results for ttl.
func NewAPIKeys(s KeyStore, bus *invalidation.Bus, ttl time.Duration) *APIKeys {
	return &APIKeys{store: s, cache: invalidation.NewCache[lookup](bus, TopicAPIKey, ttl), bus: bus, now: time.Now}
}

// Verify checks a presented key and returns it when it may be used.
func (v *APIKeys) Verify(ctx context.Context, secret string) (*store.APIKeyAuth, error) {
	if !LooksLikeAPIKey(secret) {
		return nil, ErrInvalidAPIKey
	}
	hash := HashAPIKey(secret)
	l, err := v.cache.Fetch(hex.EncodeToString(hash), func() (lookup, error) {
		k, err := v.store.ByHash(ctx, hash)
		if errors.Is(err, store.ErrNotFound) {
			return lookup{}, nil
		}
		return lookup{k}, err
	})
	switch {
	case err != nil:
		return nil, err
	case l.key == nil:
		return nil, ErrInvalidAPIKey
	case l.key.RevokedAt != nil:
		return nil, ErrAPIKeyRevoked
	case l.key.ExpiresAt != nil && !v.now().Before(*l.key.ExpiresAt):
		return nil, ErrAPIKeyExpired
	}
	return l.key, nil
}

// Invalidate drops a key (by the hash of its secret) on every instance.
func (v *APIKeys) Invalidate(ctx context.Context, hash []byte) error {
	return v.bus.Publish(ctx, TopicAPIKey, hex.EncodeToString(hash))
}

// Usage aggregates API key use in memory and writes it in batches: one
// statement per flush interval instead of a write per request. Flush on
// shutdown loses nothing; a failed flush keeps the counts for the next one.
type Usage struct {
	store    KeyStore
	interval time.Duration
	log      *slog.Logger
	mu       sync.Mutex
	pending  map[uuid.UUID]*store.Usage
	done     chan struct{}
	stopped  chan struct{}
	started  atomic.Bool
}

// NewUsage returns a tracker; Start begins periodic flushing.
func NewUsage(s KeyStore, interval time.Duration, log *slog.Logger) *Usage {
	return &Usage{store: s, interval: interval, log: log, pending: map[uuid.UUID]*store.Usage{},
		done: make(chan struct{}), stopped: make(chan struct{})}
}

// Admitted counts the use of the API key that makes the request in ctx (if
// one does), from the request's client IP.
func (u *Usage) Admitted(ctx context.Context) {
	if p := PrincipalFrom(ctx); p != nil && p.Kind == KindAPIKey {
		u.Record(p.APIKeyID, middleware.ClientIP(ctx))
	}
}

// Record counts one use of key from ip.
func (u *Usage) Record(key uuid.UUID, ip string) {
	now := time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	p := u.pending[key]
	if p == nil {
		p = &store.Usage{KeyID: key}
		u.pending[key] = p
	}
	p.Count++
	if now.After(p.LastUsed) {
		p.LastUsed, p.LastIP = now, ip
	}
}

// Flush writes everything recorded so far.
func (u *Usage) Flush(ctx context.Context) error {
	u.mu.Lock()
	batch := make([]store.Usage, 0, len(u.pending))
	for _, p := range u.pending {
		batch = append(batch, *p)
	}
	u.pending = map[uuid.UUID]*store.Usage{}
	u.mu.Unlock()
	if err := u.store.RecordUsage(ctx, batch); err != nil {
		u.mu.Lock()
		for _, b := range batch { // merge back: nothing is lost
			p := u.pending[b.KeyID]
			if p == nil {
				p = &store.Usage{KeyID: b.KeyID}
				u.pending[b.KeyID] = p
			}
			p.Count += b.Count
			if b.LastUsed.After(p.LastUsed) {
				p.LastUsed, p.LastIP = b.LastUsed, b.LastIP
			}
		}
		u.mu.Unlock()
		return err
	}
	return nil
}

// Start flushes every interval until Stop.
func (u *Usage) Start() {
	u.started.Store(true)
	go func() {
		defer close(u.stopped)
		t := time.NewTicker(u.interval)
		defer t.Stop()
		for {
			select {
			case <-u.done:
				return
			case <-t.C:
				if err := u.Flush(context.Background()); err != nil {
					u.log.Warn("api key usage flush failed; kept for the next one", "error", err.Error())
				}
			}
		}
	}()
}

// Stop ends periodic flushing and writes what is left.
func (u *Usage) Stop(ctx context.Context) error {
	close(u.done)
	if u.started.Load() {
		<-u.stopped
	}
	return u.Flush(ctx)
}

// NewAPIKeysWithClock is NewAPIKeys with a clock, for tests of expiry.
func NewAPIKeysWithClock(s KeyStore, bus *invalidation.Bus, ttl time.Duration, now func() time.Time) *APIKeys {
	v := NewAPIKeys(s, bus, ttl)
	v.now = now
	return v
}
