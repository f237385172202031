package store

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"

	"github.com/agentvoicebox/avb/tenancy"
)

// APIKey is an API key as stored: the hash of the secret, never the secret.
type APIKey struct {
	bun.BaseModel `bun:"table:api_keys"`

	ID            uuid.UUID  `bun:"id,pk,type:uuid,default:gen_random_uuid()"`
	TenantID      uuid.UUID  `bun:"tenant_id,type:uuid"`
	Name          string     `bun:"name"`
	Description   string     `bun:"description"`
	Prefix        string     `bun:"prefix"`
	Hash          []byte     `bun:"key_hash"`
	Scopes        []string   `bun:"scopes,array"`
	RateLimitTier string     `bun:"rate_limit_tier"`
	ExpiresAt     *time.Time `bun:"expires_at"`
	RevokedAt     *time.Time `bun:"revoked_at"`
	LastUsedAt    *time.Time `bun:"last_used_at"`
	LastUsedIP    string     `bun:"last_used_ip"`
	UsageCount    int64      `bun:"usage_count"`
	CreatedBy     *uuid.UUID `bun:"created_by,type:uuid"`
	ReplacedBy    *uuid.UUID `bun:"replaced_by,type:uuid"`
	CreatedAt     time.Time  `bun:"created_at,nullzero,default:now()"`
}

// APIKeyAuth is what authentication needs to know of a key.
type APIKeyAuth struct {
	ID            uuid.UUID
	TenantID      uuid.UUID
	Scopes        []string
	RateLimitTier string
	ExpiresAt     *time.Time
	RevokedAt     *time.Time
	CreatedBy     *uuid.UUID
}

// APIKeys is the API key repository; every method but ByHash and
// RecordUsage is scoped to the tenant in ctx.
type APIKeys struct{ db *DB }

// APIKeys returns the API key repository.
func (db *DB) APIKeys() APIKeys { return APIKeys{db} }

// activeKeys counts against max_api_keys: not revoked, not expired, not replaced.
const activeKeys = "revoked_at IS NULL AND replaced_by IS NULL AND (expires_at IS NULL OR expires_at > now())"

// Create stores a new key, counted against the tenant's max_api_keys.
func (r APIKeys) Create(ctx context.Context, k *APIKey) error {
	return r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		if err := r.insert(ctx, tx, k, uuid.Nil); err != nil {
			return err
		}
		DescribeAudit(ctx, k.ID.String(), "created API key "+strconv.Quote(k.Name)+" ("+k.Prefix+"…)", nil, nil)
		return nil
	})
}

// insert adds k after checking max_api_keys; replacing (a key being rotated
// out) does not count against the limit.
func (r APIKeys) insert(ctx context.Context, tx bun.Tx, k *APIKey, replacing uuid.UUID) error {
	tenantID, _ := tenancy.ID(ctx)
	limits, err := lockForLimit(ctx, tx, tenantID)
	if err != nil {
		return err
	}
	n, err := tx.NewSelect().Model((*APIKey)(nil)).Where(activeKeys).Where("id <> ?", replacing).Count(ctx)
	if err != nil {
		return err
	}
	if int(n) >= limits.MaxAPIKeys {
		return &LimitError{Limit: "max_api_keys", Max: limits.MaxAPIKeys}
	}
	k.TenantID = tenantID
	if k.RateLimitTier == "" {
		k.RateLimitTier = "standard"
	}
	_, err = tx.NewInsert().Model(k).ExcludeColumn("id", "created_at").Returning("*").Exec(ctx)
	return err
}

// Get returns a key of the tenant.
func (r APIKeys) Get(ctx context.Context, id uuid.UUID) (*APIKey, error) {
	k := new(APIKey)
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewSelect().Model(k).Where("id = ?", id).Scan(ctx)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return k, err
}

// List returns one page of the tenant's keys, newest first.
func (r APIKeys) List(ctx context.Context, includeRevoked bool, size int, token string) ([]APIKey, string, error) {
	var out []APIKey
	var next string
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewSelect().Model(&out)
		if !includeRevoked {
			q = q.Where("revoked_at IS NULL")
		}
		var err error
		next, err = keysetPage(ctx, q, &out, size, token, true, includeRevoked,
			func(k APIKey) (time.Time, uuid.UUID) { return k.CreatedAt, k.ID })
		return err
	})
	return out, next, err
}

// Revoke stops a key now. Revoking a revoked key keeps its first revoke time.
func (r APIKeys) Revoke(ctx context.Context, id uuid.UUID) (*APIKey, error) {
	k := new(APIKey)
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewUpdate().Model(k).Set("revoked_at = COALESCE(revoked_at, now())").
			Where("id = ?", id).Returning("*").Scan(ctx)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return k, err
}

// ErrKeyNotRotatable: revoked, expired or already replaced keys cannot be rotated.
var ErrKeyNotRotatable = errors.New("api key is revoked, expired or already rotated")

// Rotate stores next as the replacement of key id (same name, scopes and
// tier unless next sets them) and lets the old key live for grace more.
func (r APIKeys) Rotate(ctx context.Context, id uuid.UUID, grace time.Duration, next *APIKey) (old *APIKey, err error) {
	old = new(APIKey)
	err = r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		if err := tx.NewSelect().Model(old).Where("id = ?", id).For("UPDATE").Scan(ctx); err != nil {
			return err
		}
		if old.RevokedAt != nil || old.ReplacedBy != nil || (old.ExpiresAt != nil && !old.ExpiresAt.After(time.Now())) {
			return ErrKeyNotRotatable
		}
		next.Name, next.Description, next.Scopes, next.RateLimitTier = old.Name, old.Description, old.Scopes, old.RateLimitTier
		next.ExpiresAt = old.ExpiresAt
		if err := r.insert(ctx, tx, next, old.ID); err != nil {
			return err
		}
		return tx.NewUpdate().Model(old).
			Set("replaced_by = ?", next.ID).
			Set("expires_at = LEAST(COALESCE(expires_at, 'infinity'), now() + ?::interval)", grace.String()).
			Where("id = ?", id).Returning("*").Scan(ctx)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return old, err
}

// ByHash finds a key by the hash of its secret, in any tenant (authentication
// happens before the tenant is known). It goes through the one narrow
// SECURITY DEFINER function that may look past row-level security.
func (r APIKeys) ByHash(ctx context.Context, hash []byte) (*APIKeyAuth, error) {
	var k APIKeyAuth
	err := r.db.do(ctx, func(ctx context.Context) error {
		row := r.db.Pool.QueryRow(ctx, "SELECT id, tenant_id, scopes, rate_limit_tier, expires_at, revoked_at, created_by FROM api_key_by_hash($1)", hash)
		return row.Scan(&k.ID, &k.TenantID, &k.Scopes, &k.RateLimitTier, &k.ExpiresAt, &k.RevokedAt, &k.CreatedBy)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &k, nil
}

// Usage is aggregated use of one key since the last flush.
type Usage struct {
	KeyID    uuid.UUID
	Count    int64
	LastUsed time.Time
	LastIP   string
}

// RecordUsage adds a batch of usage in one statement.
func (r APIKeys) RecordUsage(ctx context.Context, batch []Usage) error {
	if len(batch) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, len(batch))
	counts := make([]int64, len(batch))
	at := make([]time.Time, len(batch))
	ips := make([]string, len(batch))
	for i, u := range batch {
		ids[i], counts[i], at[i], ips[i] = u.KeyID, u.Count, u.LastUsed, u.LastIP
	}
	return r.db.do(ctx, func(ctx context.Context) error {
		_, err := r.db.Pool.Exec(ctx, "SELECT record_api_key_usage($1, $2, $3, $4)", ids, counts, at, ips)
		return err
	})
}
