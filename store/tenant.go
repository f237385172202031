package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/agentvoicebox/avb/tenancy"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
)

// Tenant tiers and statuses, as stored.
const (
	TierFree       = "free"
	TierStarter    = "starter"
	TierPro        = "pro"
	TierEnterprise = "enterprise"

	StatusActive    = "active"
	StatusSuspended = "suspended"
	StatusPending   = "pending"
	StatusDeleted   = "deleted"
)

// Limits caps what a tenant may create.
type Limits struct {
	MaxUsers            int `bun:"max_users"`
	MaxProjects         int `bun:"max_projects"`
	MaxAPIKeys          int `bun:"max_api_keys"`
	MaxSessionsPerMonth int `bun:"max_sessions_per_month"`
}

// TierLimits are the default limits of each tier.
var TierLimits = map[string]Limits{
	TierFree:       {MaxUsers: 3, MaxProjects: 2, MaxAPIKeys: 2, MaxSessionsPerMonth: 100},
	TierStarter:    {MaxUsers: 10, MaxProjects: 5, MaxAPIKeys: 10, MaxSessionsPerMonth: 2_000},
	TierPro:        {MaxUsers: 50, MaxProjects: 25, MaxAPIKeys: 50, MaxSessionsPerMonth: 20_000},
	TierEnterprise: {MaxUsers: 1_000, MaxProjects: 500, MaxAPIKeys: 1_000, MaxSessionsPerMonth: 1_000_000},
}

// Tenant is a company on the platform.
type Tenant struct {
	bun.BaseModel `bun:"table:tenants"`

	ID           uuid.UUID       `bun:"id,pk,type:uuid,default:gen_random_uuid()"`
	Name         string          `bun:"name"`
	Slug         string          `bun:"slug"`
	Tier         string          `bun:"tier"`
	Status       string          `bun:"status"`
	StatusReason string          `bun:"status_reason"`
	BillingID    string          `bun:"billing_id"`
	Settings     json.RawMessage `bun:"settings,type:jsonb"`
	AuthzToken   string          `bun:"authz_token"`
	Limits
	CreatedAt time.Time `bun:"created_at,nullzero,default:now()"`
	UpdatedAt time.Time `bun:"updated_at,nullzero,default:now()"`
}

// Tenants is the tenant repository. Tenants are platform-level rows.
type Tenants struct{ db *DB }

// Tenants returns the tenant repository.
func (db *DB) Tenants() Tenants { return Tenants{db} }

// Create inserts t; ID, timestamps and zero limits are filled in.
func (r Tenants) Create(ctx context.Context, t *Tenant) error {
	if t.Tier == "" {
		t.Tier = TierFree
	}
	if t.Status == "" {
		t.Status = StatusActive
	}
	if t.Limits == (Limits{}) {
		t.Limits = TierLimits[t.Tier]
	}
	if len(t.Settings) == 0 {
		t.Settings = json.RawMessage(`{}`)
	}
	if t.ID == uuid.Nil {
		t.ID = uuid.New()
	}
	// A transaction acting for the new tenant: its audit entry (when the
	// request records one) starts the tenant's log.
	err := r.db.InTenant(tenancy.With(ctx, t.ID), func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(t).Returning("*").Exec(ctx)
		DescribeAudit(ctx, t.ID.String(), "created tenant "+strconv.Quote(t.Slug), nil,
			map[string]any{"name": t.Name, "slug": t.Slug, "tier": t.Tier, "status": t.Status})
		return err
	})
	if pgCode(err) == codeUniqueViolation {
		return fmt.Errorf("tenant slug %q: %w", t.Slug, ErrAlreadyExists)
	}
	return err
}

// Get returns a tenant by id, whatever its status.
func (r Tenants) Get(ctx context.Context, id uuid.UUID) (*Tenant, error) {
	return r.one(ctx, "id = ?", id)
}

// GetBySlug returns a tenant by slug, whatever its status.
func (r Tenants) GetBySlug(ctx context.Context, slug string) (*Tenant, error) {
	return r.one(ctx, "slug = ?", slug)
}

func (r Tenants) one(ctx context.Context, where string, arg any) (*Tenant, error) {
	t := new(Tenant)
	err := r.db.do(ctx, func(ctx context.Context) error {
		return r.db.Bun.NewSelect().Model(t).Where(where, arg).Scan(ctx)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return t, err
}

// Count returns how many tenants there are (deleted ones aside).
func (r Tenants) Count(ctx context.Context) (int64, error) {
	var n int64
	err := r.db.do(ctx, func(ctx context.Context) error {
		var err error
		n, err = r.db.Bun.NewSelect().Model((*Tenant)(nil)).Where("status <> ?", StatusDeleted).Count(ctx)
		return err
	})
	return n, err
}

// SetStatus changes a tenant's status and returns it.
func (r Tenants) SetStatus(ctx context.Context, id uuid.UUID, status, reason string) (*Tenant, error) {
	t := new(Tenant)
	err := r.db.InTenant(tenancy.With(ctx, id), func(ctx context.Context, tx bun.Tx) error {
		var before struct{ Status, StatusReason string }
		if err := tx.NewSelect().Table("tenants").Column("status", "status_reason").Where("id = ?", id).For("UPDATE").
			Scan(ctx, &before.Status, &before.StatusReason); err != nil {
			return err
		}
		if err := tx.NewUpdate().Model(t).
			Set("status = ?", status).Set("status_reason = ?", reason).Set("updated_at = now()").
			Where("id = ?", id).Returning("*").Scan(ctx); err != nil {
			return err
		}
		DescribeAudit(ctx, id.String(), "tenant "+strconv.Quote(t.Slug)+" "+before.Status+" → "+status,
			map[string]any{"status": before.Status, "status_reason": before.StatusReason},
			map[string]any{"status": status, "status_reason": reason})
		return nil
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return t, err
}

// ChangeTier moves a tenant to tier with limits (zero: the tier's
// defaults) and returns it.
func (r Tenants) ChangeTier(ctx context.Context, id uuid.UUID, tier string, limits Limits) (*Tenant, error) {
	if limits == (Limits{}) {
		limits = TierLimits[tier]
	}
	t := new(Tenant)
	err := r.db.InTenant(tenancy.With(ctx, id), func(ctx context.Context, tx bun.Tx) error {
		var before Tenant
		if err := tx.NewSelect().Model(&before).Where("id = ?", id).For("UPDATE").Scan(ctx); err != nil {
			return err
		}
		if err := tx.NewUpdate().Model(t).Set("tier = ?", tier).
			Set("max_users = ?, max_projects = ?, max_api_keys = ?, max_sessions_per_month = ?",
				limits.MaxUsers, limits.MaxProjects, limits.MaxAPIKeys, limits.MaxSessionsPerMonth).
			Set("updated_at = now()").Where("id = ?", id).Returning("*").Scan(ctx); err != nil {
			return err
		}
		DescribeAudit(ctx, id.String(), "tenant "+strconv.Quote(t.Slug)+" moved from tier "+before.Tier+" to "+tier,
			map[string]any{"tier": before.Tier, "limits": before.Limits}, map[string]any{"tier": tier, "limits": limits})
		return nil
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return t, err
}

// UpdateSettings replaces a tenant's settings document and returns it.
func (r Tenants) UpdateSettings(ctx context.Context, id uuid.UUID, settings json.RawMessage) (*Tenant, error) {
	t := new(Tenant)
	err := r.db.InTenant(tenancy.With(ctx, id), func(ctx context.Context, tx bun.Tx) error {
		var before string
		if err := tx.NewSelect().Table("tenants").Column("settings").Where("id = ?", id).For("UPDATE").Scan(ctx, &before); err != nil {
			return err
		}
		if err := tx.NewUpdate().Model(t).
			Set("settings = ?", string(settings)).Set("updated_at = now()").
			Where("id = ?", id).Returning("*").Scan(ctx); err != nil {
			return err
		}
		old, new := AuditDiff(json.RawMessage(before), settings)
		DescribeAudit(ctx, id.String(), "updated the settings of tenant "+strconv.Quote(t.Slug), old, new)
		return nil
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return t, err
}

// SetAuthzToken records the ZedToken of the tenant's newest authorization
// write; checks on the tenant are then at least as fresh as that write.
func (r Tenants) SetAuthzToken(ctx context.Context, id uuid.UUID, token string) error {
	return r.db.do(ctx, func(ctx context.Context) error {
		_, err := r.db.Bun.NewUpdate().Table("tenants").Set("authz_token = ?", token).Where("id = ?", id).Exec(ctx)
		return err
	})
}

// TenantOrder is how List sorts.
type TenantOrder int

// Orders for List.
const (
	TenantsNewestFirst TenantOrder = iota
	TenantsOldestFirst
	TenantsByName
	TenantsBySlug
)

// TenantFilter selects tenants for List.
type TenantFilter struct {
	Status string // "" = every status but deleted
	Tier   string
	Query  string // prefix of name or slug, case-insensitive
	Order  TenantOrder
}

// List returns one page of tenants and the token of the next page ("" at the end).
func (r Tenants) List(ctx context.Context, f TenantFilter, size int, token string) ([]Tenant, string, error) {
	qh := queryHash("tenants", f.Status, f.Tier, strings.ToLower(f.Query), fmt.Sprint(f.Order))
	cursor, err := decodePageToken(token, qh)
	if err != nil {
		return nil, "", err
	}
	col, desc := map[TenantOrder]string{
		TenantsNewestFirst: "created_at", TenantsOldestFirst: "created_at", TenantsByName: "name", TenantsBySlug: "slug",
	}[f.Order], f.Order == TenantsNewestFirst

	var out []Tenant
	q := r.db.Bun.NewSelect().Model(&out)
	if f.Status == "" {
		q = q.Where("status <> ?", StatusDeleted)
	} else {
		q = q.Where("status = ?", f.Status)
	}
	if f.Tier != "" {
		q = q.Where("tier = ?", f.Tier)
	}
	if f.Query != "" {
		prefix := escapeLike(strings.ToLower(f.Query)) + "%"
		q = q.Where("(lower(name) LIKE ? OR slug LIKE ?)", prefix, prefix)
	}
	op, dir := ">", "ASC"
	if desc {
		op, dir = "<", "DESC"
	}
	if cursor != nil {
		key := any(cursor.GetAfterKey())
		if col == "created_at" {
			at, err := time.Parse(time.RFC3339Nano, cursor.GetAfterKey())
			if err != nil {
				return nil, "", ErrInvalidPageToken
			}
			key = at
		}
		id, err := uuid.Parse(cursor.GetAfterId())
		if err != nil {
			return nil, "", ErrInvalidPageToken
		}
		q = q.Where("(?, id) "+op+" (?, ?)", bun.Ident(col), key, id)
	}
	if err := r.db.do(ctx, func(ctx context.Context) error {
		return q.OrderExpr("? "+dir+", id "+dir, bun.Ident(col)).Limit(int64(size + 1)).Scan(ctx)
	}); err != nil {
		return nil, "", err
	}
	if len(out) <= size {
		return out, "", nil
	}
	out = out[:size]
	last := out[size-1]
	key := map[string]string{"created_at": last.CreatedAt.Format(time.RFC3339Nano), "name": last.Name, "slug": last.Slug}[col]
	return out, encodePageToken(key, last.ID.String(), qh), nil
}

func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// lockForLimit takes the tenant row lock inside a tenant transaction and
// returns its limits, so concurrent creators of counted rows serialize and a
// limit cannot be overrun by a race.
func lockForLimit(ctx context.Context, tx bun.Tx, id uuid.UUID) (Limits, error) {
	var l Limits
	err := tx.NewSelect().Table("tenants").Column("max_users", "max_projects", "max_api_keys", "max_sessions_per_month").
		Where("id = ?", id).For("UPDATE").Scan(ctx, &l.MaxUsers, &l.MaxProjects, &l.MaxAPIKeys, &l.MaxSessionsPerMonth)
	if errors.Is(err, sql.ErrNoRows) {
		return l, ErrNotFound
	}
	return l, err
}
