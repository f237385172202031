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

// Notification is a message to one user (UserID set) or to the whole tenant.
type Notification struct {
	bun.BaseModel `bun:"table:notifications"`

	ID        uuid.UUID       `bun:"id,pk,type:uuid"`
	TenantID  uuid.UUID       `bun:"tenant_id,type:uuid"`
	UserID    *uuid.UUID      `bun:"user_id,type:uuid"`
	Type      string          `bun:"type"`
	Severity  string          `bun:"severity"`
	Title     string          `bun:"title"`
	Body      string          `bun:"body"`
	Data      json.RawMessage `bun:"data,type:jsonb"`
	DedupeKey *string         `bun:"dedupe_key"`
	CreatedAt time.Time       `bun:"created_at"`
	// Read is whether the reader has read it (filled by List).
	Read bool `bun:"read,scanonly"`
}

// Notifications is the notification repository, scoped to the tenant in ctx.
type Notifications struct{ db *DB }

// Notifications returns the notification repository.
func (db *DB) Notifications() Notifications { return Notifications{db} }

// Create stores n and fills its id and time. A notification whose dedupe
// key was used before is not stored again (created is false).
func (r Notifications) Create(ctx context.Context, n *Notification) (created bool, err error) {
	if n.Severity == "" {
		n.Severity = "info"
	}
	if len(n.Data) == 0 {
		n.Data = json.RawMessage("{}")
	}
	err = r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		err := tx.NewInsert().Model(n).ExcludeColumn("id", "tenant_id", "created_at").
			On("CONFLICT DO NOTHING").Returning("id, tenant_id, created_at").Scan(ctx, &n.ID, &n.TenantID, &n.CreatedAt)
		if errors.Is(err, sql.ErrNoRows) { // the dedupe key was used
			return nil
		}
		created = err == nil
		return err
	})
	return created, err
}

// visibleTo keeps what a user may see: theirs and the tenant's.
func visibleTo(q *bun.SelectQuery, user uuid.UUID) *bun.SelectQuery {
	return q.Where("(n.user_id IS NULL OR n.user_id = ?)", user)
}

const unreadBy = "NOT EXISTS (SELECT 1 FROM notification_reads r WHERE r.notification_id = n.id AND r.user_id = ?)"

// List returns a page of user's inbox, newest first, and its unread count.
func (r Notifications) List(ctx context.Context, user uuid.UUID, unreadOnly bool, size int, token string) ([]Notification, string, int64, error) {
	var out []Notification
	var next string
	var unread int64
	qh := queryHash("notifications", user.String(), fmtAny(unreadOnly))
	cursor, err := decodePageToken(token, qh)
	if err != nil {
		return nil, "", 0, err
	}
	err = r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		q := visibleTo(tx.NewSelect().Model(&out).ModelTableExpr("notifications AS n").
			ColumnExpr("n.*").ColumnExpr("NOT ("+unreadBy+") AS read", user), user)
		if unreadOnly {
			q = q.Where(unreadBy, user)
		}
		if cursor != nil {
			at, err1 := time.Parse(time.RFC3339Nano, cursor.GetAfterKey())
			id, err2 := uuid.Parse(cursor.GetAfterId())
			if err1 != nil || err2 != nil {
				return ErrInvalidPageToken
			}
			q = q.Where("(n.created_at, n.id) < (?, ?)", at, id)
		}
		if err := q.OrderExpr("n.created_at DESC, n.id DESC").Limit(int64(size + 1)).Scan(ctx); err != nil {
			return err
		}
		if len(out) > size {
			out = out[:size]
			last := out[size-1]
			next = encodePageToken(last.CreatedAt.Format(time.RFC3339Nano), last.ID.String(), qh)
		}
		var err error
		unread, err = r.unread(ctx, tx, user)
		return err
	})
	return out, next, unread, err
}

func (r Notifications) unread(ctx context.Context, tx bun.Tx, user uuid.UUID) (int64, error) {
	n, err := visibleTo(tx.NewSelect().TableExpr("notifications AS n"), user).Where(unreadBy, user).Count(ctx)
	return int64(n), err
}

// MarkRead marks ids (all of the user's when ids is nil) read by user. It
// returns how many were newly marked and how many stay unread; ids the
// user cannot see are ignored.
func (r Notifications) MarkRead(ctx context.Context, user uuid.UUID, ids []uuid.UUID) (marked, unread int64, err error) {
	err = r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		sel := visibleTo(tx.NewSelect().TableExpr("notifications AS n").ColumnExpr("n.id, ?::uuid", user), user)
		if ids != nil {
			sel = sel.Where("n.id IN (?)", bun.In(ids))
		}
		res, err := tx.NewRaw("INSERT INTO notification_reads (notification_id, user_id) ? ON CONFLICT DO NOTHING", sel).Exec(ctx)
		if err != nil {
			return err
		}
		marked, _ = res.RowsAffected()
		unread, err = r.unread(ctx, tx, user)
		return err
	})
	return marked, unread, err
}

// billingAudience is who hears about a tenant's billing: its admins and
// billing users (the whole tenant when it has none).
const billingAudience = `SELECT DISTINCT user_id FROM role_assignments WHERE role IN ('admin', 'billing')
	UNION ALL SELECT NULL WHERE NOT EXISTS (SELECT 1 FROM role_assignments WHERE role IN ('admin', 'billing'))`

// notifyBilling writes n once for each of the tenant's billing users, in tx.
// Its dedupe key (required) is kept per user, so a retry writes nothing new;
// it returns the notifications written now.
func notifyBilling(ctx context.Context, tx bun.Tx, n Notification) ([]Notification, error) {
	if n.DedupeKey == nil {
		return nil, errors.New("a billing notification needs a dedupe key")
	}
	if n.Severity == "" {
		n.Severity = "info"
	}
	if len(n.Data) == 0 {
		n.Data = json.RawMessage("{}")
	}
	var out []Notification
	err := tx.NewRaw(`INSERT INTO notifications (user_id, type, severity, title, body, data, dedupe_key)
		SELECT a.user_id, ?, ?, ?, ?, ?::jsonb, ? || ':' || coalesce(a.user_id::text, 'tenant') FROM (`+billingAudience+`) a
		ON CONFLICT DO NOTHING RETURNING *`,
		n.Type, n.Severity, n.Title, n.Body, string(n.Data), *n.DedupeKey).Scan(ctx, &out)
	return out, err
}

// NotifyBilling writes n for each of the tenant's billing users (see
// notifyBilling) and returns those written now.
func (r Notifications) NotifyBilling(ctx context.Context, n Notification) ([]Notification, error) {
	var out []Notification
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		var err error
		out, err = notifyBilling(ctx, tx, n)
		return err
	})
	return out, err
}
