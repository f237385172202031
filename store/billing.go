package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
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

// UsageByDay sums the usage ledger of the tenant in ctx over [since, until)
// per UTC day (the day's midnight), for days with any usage.
func (db *DB) UsageByDay(ctx context.Context, since, until time.Time) (map[time.Time]map[string]float64, error) {
	out := map[time.Time]map[string]float64{}
	err := db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		var rows []struct {
			Day   time.Time `bun:"day"`
			Kind  string    `bun:"kind"`
			Total float64   `bun:"total"`
		}
		err := tx.NewSelect().Table("usage_ledger").
			ColumnExpr("date_trunc('day', recorded_at AT TIME ZONE 'UTC') AS day, kind, sum(quantity) AS total").
			Where("recorded_at >= ? AND recorded_at < ?", since, until).GroupExpr("1, 2").Scan(ctx, &rows)
		for _, r := range rows {
			day := time.Date(r.Day.Year(), r.Day.Month(), r.Day.Day(), 0, 0, 0, 0, time.UTC)
			if out[day] == nil {
				out[day] = map[string]float64{}
			}
			out[day][r.Kind] = r.Total
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
	return db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error { return UpsertInvoiceTx(ctx, tx, inv) })
}

// PendingBillingTenants lists the tenants with ledger rows the billing
// provider has not accepted yet (a platform-level read).
func (db *DB) PendingBillingTenants(ctx context.Context) ([]uuid.UUID, error) {
	var out []uuid.UUID
	err := db.do(ctx, func(ctx context.Context) error {
		return db.Bun.NewRaw("SELECT * FROM billing_pending_tenants()").Scan(ctx, &out)
	})
	return out, err
}

// UnsyncedUsage returns up to limit of the tenant's ledger rows the billing
// provider has not accepted, oldest first, after the row after (the last
// of the previous page; nil: from the start). Paging by key keeps each read
// off the index entries of rows marked since.
func (db *DB) UnsyncedUsage(ctx context.Context, after *UsageEntry, limit int) ([]UsageEntry, error) {
	var out []UsageEntry
	err := db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewSelect().Model(&out).Where("synced_at IS NULL")
		if after != nil {
			q = q.Where("(recorded_at, id) > (?, ?)", after.RecordedAt, after.ID)
		}
		return q.OrderExpr("recorded_at, id").Limit(int64(limit)).Scan(ctx)
	})
	return out, err
}

// MarkUsageSynced records that the billing provider accepted these rows of
// the tenant's ledger.
func (db *DB) MarkUsageSynced(ctx context.Context, ids []uuid.UUID) error {
	return db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewRaw("UPDATE usage_ledger SET synced_at = now() WHERE id IN (?) AND synced_at IS NULL", bun.In(ids)).Exec(ctx)
		return err
	})
}

// BillingSyncSucceeded records that the tenant's usage sync went through.
func (db *DB) BillingSyncSucceeded(ctx context.Context) error {
	return db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewRaw(`INSERT INTO billing_accounts (sync_failures, last_sync_error, last_synced_at) VALUES (0, '', now())
			ON CONFLICT (tenant_id) DO UPDATE SET sync_failures = 0, last_sync_error = '', last_synced_at = now(), updated_at = now()`).Exec(ctx)
		return err
	})
}

// BillingAccount is a tenant's account at the billing provider.
type BillingAccount struct {
	bun.BaseModel `bun:"table:billing_accounts"`

	TenantID           uuid.UUID  `bun:"tenant_id,pk,type:uuid"`
	PlanCode           string     `bun:"plan_code"`
	SubscriptionStatus string     `bun:"subscription_status"`
	ProvisionedAt      *time.Time `bun:"provisioned_at"`
	SyncFailures       int        `bun:"sync_failures"`
	LastSyncError      string     `bun:"last_sync_error"`
	LastSyncedAt       *time.Time `bun:"last_synced_at"`
}

// BillingAccount returns the tenant's account (a pending one if it has none).
func (db *DB) BillingAccount(ctx context.Context) (*BillingAccount, error) {
	a := &BillingAccount{SubscriptionStatus: "pending"}
	err := db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		err := tx.NewSelect().Model(a).Limit(1).Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	})
	return a, err
}

// SetBillingSubscription records the plan the tenant's subscription is on
// (status active or terminated), as the provider confirmed it.
func (db *DB) SetBillingSubscription(ctx context.Context, planCode, status string) error {
	return db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewRaw(`INSERT INTO billing_accounts (plan_code, subscription_status, provisioned_at) VALUES (?, ?, now())
			ON CONFLICT (tenant_id) DO UPDATE SET plan_code = EXCLUDED.plan_code,
			subscription_status = EXCLUDED.subscription_status, provisioned_at = now(), updated_at = now()`,
			planCode, status).Exec(ctx)
		return err
	})
}

// BillingSyncFailed counts one more failed usage sync of the tenant and
// returns how many in a row have failed.
func (db *DB) BillingSyncFailed(ctx context.Context, reason string) (int, error) {
	var n int
	err := db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`INSERT INTO billing_accounts (sync_failures, last_sync_error) VALUES (1, ?)
			ON CONFLICT (tenant_id) DO UPDATE SET sync_failures = billing_accounts.sync_failures + 1,
			last_sync_error = EXCLUDED.last_sync_error, updated_at = now()
			RETURNING sync_failures`, reason).Scan(ctx, &n)
	})
	return n, err
}

// TenantsBillingOutOfDate lists the tenants whose billing account does not
// stand where the tenant does: never provisioned, on another plan than
// plans gives for its tier, or deleted with a subscription still active.
func (db *DB) TenantsBillingOutOfDate(ctx context.Context, plans map[string]string) ([]uuid.UUID, error) {
	b, err := json.Marshal(plans)
	if err != nil {
		return nil, err
	}
	var out []uuid.UUID
	err = db.do(ctx, func(ctx context.Context) error {
		return db.Bun.NewRaw("SELECT * FROM billing_out_of_date(?::jsonb)", string(b)).Scan(ctx, &out)
	})
	return out, err
}

// BillingAlert is a usage threshold (a percentage of a quota) a tenant
// passed in a billing period.
type BillingAlert struct {
	bun.BaseModel `bun:"table:billing_alerts"`

	TenantID    uuid.UUID `bun:"tenant_id,type:uuid"`
	PeriodStart time.Time `bun:"period_start,type:date"`
	Metric      string    `bun:"metric"`
	Threshold   int       `bun:"threshold"`
	Used        float64   `bun:"used"`
	Quota       float64   `bun:"quota"`
	FiredAt     time.Time `bun:"fired_at"`
}

// FireBillingAlert records the alert unless it fired before in its period
// (fired false), and in the same transaction writes n for the tenant's
// billing users; it returns the notifications written.
func (db *DB) FireBillingAlert(ctx context.Context, a *BillingAlert, n Notification) (fired bool, notes []Notification, err error) {
	err = db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewInsert().Model(a).ExcludeColumn("tenant_id", "fired_at").On("CONFLICT DO NOTHING").Exec(ctx)
		if err != nil {
			return err
		}
		if k, _ := res.RowsAffected(); k == 0 {
			return nil
		}
		fired = true
		notes, err = notifyBilling(ctx, tx, n)
		return err
	})
	return fired, notes, err
}

// BillingAlerts lists the alerts the tenant's period has fired.
func (db *DB) BillingAlerts(ctx context.Context, periodStart time.Time) ([]BillingAlert, error) {
	var out []BillingAlert
	err := db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewSelect().Model(&out).Where("period_start = ?::date", periodStart).Order("metric", "threshold").Scan(ctx)
	})
	return out, err
}

// MonthSessions counts the tenant's sessions created since start (what
// usage_month keeps without counting; kept as the measure it is compared to).
func (db *DB) MonthSessions(ctx context.Context, since time.Time) (int, error) {
	var n int
	err := db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		c, err := tx.NewSelect().Table("sessions").Where("created_at >= ?", since).Count(ctx)
		n = int(c)
		return err
	})
	return n, err
}

// MonthUsage is the tenant's month (from its first day, UTC) as its quotas
// see it: sessions created and audio seconds recorded.
func (db *DB) MonthUsage(ctx context.Context, period time.Time) (sessions int64, audioSeconds float64, err error) {
	err = db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		err := tx.NewSelect().Table("usage_month").Column("sessions", "audio_seconds").
			Where("period = ?::date", period.Format(time.DateOnly)).Scan(ctx, &sessions, &audioSeconds)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	})
	return sessions, audioSeconds, err
}

// ErrDuplicateWebhook is returned for a webhook whose unique key was handled.
var ErrDuplicateWebhook = errors.New("webhook already handled")

// HandleWebhookOnce records the provider's webhook by its unique key and
// runs apply in the same transaction, so a delivery is applied exactly
// once; a key seen before returns ErrDuplicateWebhook and applies nothing.
func (db *DB) HandleWebhookOnce(ctx context.Context, key, typ string, apply func(ctx context.Context, tx bun.Tx) error) error {
	return db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewRaw("INSERT INTO billing_webhooks (unique_key, type) VALUES (?, ?) ON CONFLICT DO NOTHING", key, typ).Exec(ctx)
		if err != nil {
			return err
		}
		if k, _ := res.RowsAffected(); k == 0 {
			return ErrDuplicateWebhook
		}
		if apply == nil {
			return nil
		}
		return apply(ctx, tx)
	})
}

// UpsertInvoiceTx records an invoice from the provider in tx.
func UpsertInvoiceTx(ctx context.Context, tx bun.Tx, inv *Invoice) error {
	_, err := tx.NewInsert().Model(inv).ExcludeColumn("id", "tenant_id").
		On("CONFLICT (tenant_id, provider_id) DO UPDATE").
		Set("number = EXCLUDED.number, status = EXCLUDED.status, total_minor = EXCLUDED.total_minor, file_url = EXCLUDED.file_url, issued_at = EXCLUDED.issued_at").
		Returning("id, tenant_id").Exec(ctx)
	return err
}

// SetBillingSubscriptionTx records the subscription's status in tx.
func SetBillingSubscriptionTx(ctx context.Context, tx bun.Tx, status string) error {
	_, err := tx.NewRaw(`INSERT INTO billing_accounts (subscription_status) VALUES (?)
		ON CONFLICT (tenant_id) DO UPDATE SET subscription_status = EXCLUDED.subscription_status, updated_at = now()`, status).Exec(ctx)
	return err
}

// BillingContact is the email of the tenant's billing contact: its first
// billing user, else its first admin ("" when it has neither yet).
func (db *DB) BillingContact(ctx context.Context) (string, error) {
	var email string
	err := db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		err := tx.NewRaw(`SELECT u.email FROM role_assignments r JOIN users u ON u.id = r.user_id
			WHERE r.role IN ('billing', 'admin') AND u.is_active AND u.email <> ''
			ORDER BY r.role = 'billing' DESC, r.created_at, u.id LIMIT 1`).Scan(ctx, &email)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	})
	return email, err
}
