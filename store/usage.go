package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
)

// UsageEntry is one quantity in the ledger: of one session, or the calls
// one API key made between two flushes (kind api_calls).
type UsageEntry struct {
	bun.BaseModel `bun:"table:usage_ledger"`

	// ID is the billing provider's transaction id for this row.
	ID        uuid.UUID  `bun:"id,type:uuid"`
	TenantID  uuid.UUID  `bun:"tenant_id,type:uuid"`
	SessionID uuid.UUID  `bun:"session_id,type:uuid,nullzero"`
	APIKeyID  *uuid.UUID `bun:"api_key_id,type:uuid"`
	Kind      string     `bun:"kind"`
	Quantity  float64    `bun:"quantity"`
	// RecordedAt is when the row was written; SyncedAt when the billing
	// provider accepted it (nil until then).
	RecordedAt time.Time  `bun:"recorded_at"`
	SyncedAt   *time.Time `bun:"synced_at"`
}

// RecordUsage writes a session's usage once: a repeated write (a retried
// activity) changes nothing.
func (r Sessions) RecordUsage(ctx context.Context, entries []UsageEntry) error {
	if len(entries) == 0 {
		return nil
	}
	return r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(&entries).Column("session_id", "kind", "quantity").On("CONFLICT (session_id, kind) DO NOTHING").Exec(ctx)
		return err
	})
}

// Usage returns a session's ledger entries.
func (r Sessions) Usage(ctx context.Context, sessionID uuid.UUID) ([]UsageEntry, error) {
	var out []UsageEntry
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewSelect().Model(&out).Where("session_id = ?", sessionID).Order("kind").Scan(ctx)
	})
	return out, err
}

// StoreTranscript saves (or replaces) a session's full transcript.
func (r Sessions) StoreTranscript(ctx context.Context, sessionID uuid.UUID, turns json.RawMessage) error {
	return r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewRaw(`INSERT INTO session_transcripts (session_id, turns) VALUES (?, ?)
			ON CONFLICT (session_id) DO UPDATE SET turns = EXCLUDED.turns, stored_at = now()`, sessionID, string(turns)).Exec(ctx)
		return err
	})
}
