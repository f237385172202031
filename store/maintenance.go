package store

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
)

// ExpireStaleSessions ends every tenant's sessions left open longer than
// maxAge (status terminated) and returns how many it ended.
func (db *DB) ExpireStaleSessions(ctx context.Context, maxAge time.Duration) (int, error) {
	return db.maintain(ctx, "SELECT expire_stale_sessions(?::interval)", maxAge.String())
}

// RollupUsage recomputes every tenant's hourly usage totals from the hour
// of since onwards and returns how many totals it wrote.
func (db *DB) RollupUsage(ctx context.Context, since time.Time) (int, error) {
	return db.maintain(ctx, "SELECT rollup_usage(?)", since)
}

// maintain runs one maintenance function, which may take longer than a
// request's statement_timeout allows; the caller's context bounds it.
func (db *DB) maintain(ctx context.Context, query string, arg any) (int, error) {
	var n int
	err := db.Bun.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, "SET LOCAL statement_timeout = 0"); err != nil {
			return err
		}
		return tx.NewRaw(query, arg).Scan(ctx, &n)
	})
	return n, err
}

// HourlyUsage is one tenant's total of one kind in one hour.
type HourlyUsage struct {
	bun.BaseModel `bun:"table:usage_hourly"`

	TenantID uuid.UUID `bun:"tenant_id,type:uuid"`
	Hour     time.Time `bun:"hour"`
	Kind     string    `bun:"kind"`
	Quantity float64   `bun:"quantity"`
}

// HourlyUsage returns the tenant's hourly totals from since, oldest first.
func (r Sessions) HourlyUsage(ctx context.Context, since time.Time) ([]HourlyUsage, error) {
	var out []HourlyUsage
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewSelect().Model(&out).Where("hour >= ?", since).Order("hour", "kind").Scan(ctx)
	})
	return out, err
}

// RetainAuditLog drops the audit log's monthly partitions that every
// tenant's retention has passed (a tenant's days, or defaultDays, at most
// maxDays), recording in each tenant's chain where it was cut. It returns
// how many partitions it dropped.
func (db *DB) RetainAuditLog(ctx context.Context, defaultDays, maxDays int) (int, error) {
	var n int
	err := db.Bun.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, "SET LOCAL statement_timeout = 0"); err != nil {
			return err
		}
		return tx.NewRaw("SELECT audit_retain(?, ?)", defaultDays, maxDays).Scan(ctx, &n)
	})
	return n, err
}

// EnsureAuditPartitions creates the audit log's monthly partitions up to
// monthsAhead months after this one and returns how many it created.
func (db *DB) EnsureAuditPartitions(ctx context.Context, monthsAhead int) (int, error) {
	return db.maintain(ctx, "SELECT audit_ensure_partitions(now(), ?)", monthsAhead)
}
