package store

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
)

// UsageTotals sums the usage ledger of the tenant in ctx over [since, until).
func (db *DB) UsageTotals(ctx context.Context, since, until time.Time) (map[string]float64, error) {
	out := map[string]float64{}
	err := db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		var rows []struct {
			Kind  string  `bun:"kind"`
			Total float64 `bun:"total"`
		}
		err := tx.NewSelect().Table("usage_ledger").ColumnExpr("kind, sum(quantity) AS total").
			Where("recorded_at >= ? AND recorded_at < ?", since, until).Group("kind").Scan(ctx, &rows)
		for _, r := range rows {
			out[r.Kind] = r.Total
		}
		return err
	})
	return out, err
}

// Invoice is a bill the billing provider issued.
type Invoice struct {
	bun.BaseModel `bun:"table:invoices"`

	ID         uuid.UUID `bun:"id,pk,type:uuid"`
	TenantID   uuid.UUID `bun:"tenant_id,type:uuid"`
	ProviderID string    `bun:"provider_id"`
	Number     string    `bun:"number"`
	Status     string    `bun:"status"`
	IssuedAt   time.Time `bun:"issued_at"`
	Currency   string    `bun:"currency"`
	TotalMinor int64     `bun:"total_minor"`
	FileURL    string    `bun:"file_url"`
}

// Invoices lists the tenant's invoices, newest first.
func (db *DB) Invoices(ctx context.Context, size int, token string) ([]Invoice, string, error) {
	var out []Invoice
	var next string
	qh := queryHash("invoices")
	cursor, err := decodePageToken(token, qh)
	if err != nil {
		return nil, "", err
	}
	err = db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewSelect().Model(&out)
		if cursor != nil {
			at, err1 := time.Parse(time.RFC3339Nano, cursor.GetAfterKey())
			id, err2 := uuid.Parse(cursor.GetAfterId())
			if err1 != nil || err2 != nil {
				return ErrInvalidPageToken
			}
			q = q.Where("(issued_at, id) < (?, ?)", at, id)
		}
		if err := q.OrderExpr("issued_at DESC, id DESC").Limit(int64(size + 1)).Scan(ctx); err != nil {
			return err
		}
		if len(out) > size {
			out = out[:size]
			last := out[size-1]
			next = encodePageToken(last.IssuedAt.Format(time.RFC3339Nano), last.ID.String(), qh)
		}
		return nil
	})
	return out, next, err
}

// UpsertInvoice records an invoice from the provider (by its provider id).
func (db *DB) UpsertInvoice(ctx context.Context, inv *Invoice) error {
	return db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(inv).ExcludeColumn("id", "tenant_id").
			On("CONFLICT (tenant_id, provider_id) DO UPDATE").
			Set("number = EXCLUDED.number, status = EXCLUDED.status, total_minor = EXCLUDED.total_minor, file_url = EXCLUDED.file_url").
			Returning("id, tenant_id").Exec(ctx)
		return err
	})
}
