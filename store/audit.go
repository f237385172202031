package store

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/uptrace/bun"
)

// AuditEntry is one action in the tenant's append-only audit log. Each
// entry is a link of the tenant's hash chain (see VerifyAudit).
type AuditEntry struct {
	bun.BaseModel `bun:"table:audit_logs"`

	ID           uuid.UUID       `bun:"id,type:uuid"`
	TenantID     uuid.UUID       `bun:"tenant_id,type:uuid"`
	Seq          int64           `bun:"seq"`
	CreatedAt    time.Time       `bun:"created_at"`
	ActorType    string          `bun:"actor_type"`
	ActorID      *uuid.UUID      `bun:"actor_id,type:uuid"`
	ActorEmail   string          `bun:"actor_email"`
	Action       string          `bun:"action"`
	ResourceType string          `bun:"resource_type"`
	ResourceID   string          `bun:"resource_id"`
	Description  string          `bun:"description"`
	IPAddress    string          `bun:"ip_address"`
	UserAgent    string          `bun:"user_agent"`
	RequestID    string          `bun:"request_id"`
	OldValues    json.RawMessage `bun:"old_values,type:jsonb"`
	NewValues    json.RawMessage `bun:"new_values,type:jsonb"`
	Hash         []byte          `bun:"hash"`
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

// appendSQL appends one entry to the chain of the transaction's tenant:
// one statement (audit_append takes the chain's head, links the entry and
// inserts it).
const appendSQL = "SELECT id, seq, created_at FROM audit_append($1, $2::uuid, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12::jsonb)"

// maxUserAgent is the most of a user agent an entry keeps.
const maxUserAgent = 256

func (e *AuditEntry) args() []any {
	if len(e.UserAgent) > maxUserAgent { // cut on a character boundary: the column is text
		e.UserAgent = strings.ToValidUTF8(e.UserAgent[:maxUserAgent], "")
	}
	var actor any
	if e.ActorID != nil {
		actor = e.ActorID.String()
	}
	return []any{e.ActorType, actor, e.ActorEmail, e.Action, e.ResourceType, e.ResourceID, e.Description,
		e.IPAddress, e.UserAgent, e.RequestID, jsonOrEmpty(e.OldValues), jsonOrEmpty(e.NewValues)}
}

func jsonOrEmpty(b json.RawMessage) string {
	if len(b) == 0 {
		return "{}"
	}
	return string(b)
}

// Append records an entry in a transaction of its own, for the tenant in
// ctx. A change a request makes records its entry with the change instead
// (WithAudit); Append is for what has no transaction of its own to join.
func (r AuditLog) Append(ctx context.Context, e *AuditEntry) error {
	return r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		e.TenantID, _ = txTenant(ctx)
		return tx.Tx.QueryRowContext(ctx, appendSQL, e.args()...).Scan(&e.ID, &e.Seq, &e.CreatedAt)
	})
}

func txTenant(ctx context.Context) (uuid.UUID, bool) {
	id, ok := ctx.Value(txTenantKey{}).(uuid.UUID)
	return id, ok
}

// Audited is the entry a request records with the change it makes: the
// first tenant transaction of the request that writes appends it just
// before its COMMIT, so the entry commits if and only if the change does.
type Audited struct {
	mu       sync.Mutex
	entry    AuditEntry
	wrote    bool // the open transaction has written
	recorded bool // committed
}

type auditedKey struct{}

// WithAudit returns ctx carrying e as the entry its change records.
func WithAudit(ctx context.Context, e AuditEntry) (context.Context, *Audited) {
	a := &Audited{entry: e}
	return context.WithValue(ctx, auditedKey{}, a), a
}

func auditedFrom(ctx context.Context) *Audited {
	a, _ := ctx.Value(auditedKey{}).(*Audited)
	return a
}

// Recorded reports whether the entry committed with a change.
func (a *Audited) Recorded() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.recorded
}

// Entry returns the entry as it stands (as recorded, once Recorded).
func (a *Audited) Entry() AuditEntry {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.entry
}

// DescribeAudit names what the request's change did to: the resource's
// id, a one-line description, and its values before and after (only the
// fields that changed, for an update). Empty arguments leave what the
// entry has. It does nothing when the request records no entry.
func DescribeAudit(ctx context.Context, resourceID, description string, old, new any) {
	a := auditedFrom(ctx)
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if resourceID != "" {
		a.entry.ResourceID = resourceID
	}
	if description != "" {
		a.entry.Description = description
	}
	if old != nil {
		a.entry.OldValues = AuditValues(old)
	}
	if new != nil {
		a.entry.NewValues = AuditValues(new)
	}
}

// began starts a tenant transaction: nothing written yet.
func (a *Audited) began() {
	a.mu.Lock()
	a.wrote = false
	a.mu.Unlock()
}

// wrote notes a statement that changes data.
func (a *Audited) noteWrite() {
	a.mu.Lock()
	a.wrote = true
	a.mu.Unlock()
}

// commitWith commits tx, appending the entry first when tx is the
// request's first transaction that wrote: the entry and the COMMIT go to
// PostgreSQL together (one round trip), so auditing adds one statement to
// the transaction and no wait. It reports whether it committed the entry.
func (a *Audited) commitWith(ctx context.Context, tx pgx.Tx) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.wrote || a.recorded {
		a.wrote = false
		return tx.Commit(ctx)
	}
	a.wrote = false
	e := a.entry
	e.TenantID, _ = txTenant(ctx)
	b := &pgx.Batch{}
	b.Queue(appendSQL, e.args()...).QueryRow(func(row pgx.Row) error { return row.Scan(&e.ID, &e.Seq, &e.CreatedAt) })
	b.Queue("COMMIT").Exec(func(tag pgconn.CommandTag) error {
		if tag.String() == "ROLLBACK" { // the transaction had failed already
			return pgx.ErrTxCommitRollback
		}
		return nil
	})
	if err := tx.Conn().SendBatch(ctx, b).Close(); err != nil {
		// Whatever part failed, nothing of the transaction stays (a
		// ROLLBACK outside a transaction only warns).
		_, _ = tx.Conn().Exec(context.WithoutCancel(ctx), "ROLLBACK")
		return err
	}
	a.entry, a.recorded = e, true
	return nil
}

// rolledBack forgets a transaction that did not commit.
func (a *Audited) rolledBack() {
	a.mu.Lock()
	a.wrote = false
	a.mu.Unlock()
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
		q := tx.NewSelect().Model(&out).ExcludeColumn("hash")
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
