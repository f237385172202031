package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
)

// AuditEntry is one action in the tenant's append-only audit log.
type AuditEntry struct {
	bun.BaseModel `bun:"table:audit_logs"`

	ID           uuid.UUID       `bun:"id,pk,type:uuid"`
	TenantID     uuid.UUID       `bun:"tenant_id,type:uuid"`
	CreatedAt    time.Time       `bun:"created_at"`
	ActorType    string          `bun:"actor_type"`
	ActorID      *uuid.UUID      `bun:"actor_id,type:uuid"`
	Action       string          `bun:"action"`
	ResourceType string          `bun:"resource_type"`
	ResourceID   string          `bun:"resource_id"`
	IPAddress    string          `bun:"ip_address"`
	RequestID    string          `bun:"request_id"`
	Changes      json.RawMessage `bun:"changes,type:jsonb"`
}

// AuditFilter narrows a read of the log; zero fields match everything.
type AuditFilter struct {
	ActorID      *uuid.UUID
	Action       string
	ResourceType string
	ResourceID   string
	Since, Until time.Time
}

func (f AuditFilter) key() string {
	actor := ""
	if f.ActorID != nil {
		actor = f.ActorID.String()
	}
	return actor + "\x00" + f.Action + "\x00" + f.ResourceType + "\x00" + f.ResourceID + "\x00" +
		f.Since.Format(time.RFC3339Nano) + "\x00" + f.Until.Format(time.RFC3339Nano)
}

// AuditLog is the audit repository, scoped to the tenant in ctx.
type AuditLog struct{ db *DB }

// AuditLog returns the audit repository.
func (db *DB) AuditLog() AuditLog { return AuditLog{db} }

// Append adds an entry; entries are never changed or deleted (the database
// refuses both).
func (r AuditLog) Append(ctx context.Context, e *AuditEntry) error {
	if len(e.Changes) == 0 {
		e.Changes = json.RawMessage("{}")
	}
	return r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewInsert().Model(e).ExcludeColumn("id", "tenant_id", "created_at").
			Returning("id, tenant_id, created_at").Scan(ctx, &e.ID, &e.TenantID, &e.CreatedAt)
	})
}

// List returns one page of the filtered log, newest first.
func (r AuditLog) List(ctx context.Context, f AuditFilter, size int, token string) ([]AuditEntry, string, error) {
	var out []AuditEntry
	var next string
	qh := queryHash("audit_logs", f.key())
	cursor, err := decodePageToken(token, qh)
	if err != nil {
		return nil, "", err
	}
	err = r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewSelect().Model(&out)
		if f.ActorID != nil {
			q = q.Where("actor_id = ?", *f.ActorID)
		}
		for col, v := range map[string]string{"action": f.Action, "resource_type": f.ResourceType, "resource_id": f.ResourceID} {
			if v != "" {
				q = q.Where("? = ?", bun.Ident(col), v)
			}
		}
		if !f.Since.IsZero() {
			q = q.Where("created_at >= ?", f.Since)
		}
		if !f.Until.IsZero() {
			q = q.Where("created_at < ?", f.Until)
		}
		if cursor != nil {
			at, err1 := time.Parse(time.RFC3339Nano, cursor.GetAfterKey())
			id, err2 := uuid.Parse(cursor.GetAfterId())
			if err1 != nil || err2 != nil {
				return ErrInvalidPageToken
			}
			q = q.Where("(created_at, id) < (?, ?)", at, id)
		}
		if err := q.OrderExpr("created_at DESC, id DESC").Limit(int64(size + 1)).Scan(ctx); err != nil {
			return err
		}
		if len(out) > size {
			out = out[:size]
			last := out[size-1]
			next = encodePageToken(last.CreatedAt.Format(time.RFC3339Nano), last.ID.String(), qh)
		}
		return nil
	})
	return out, next, err
}
