package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/agentvoicebox/avb/tenancy"
)

// InTenant runs fn in a transaction that acts for the tenant in ctx: it sets
// app.tenant_id for the transaction only (SET LOCAL semantics, sent with
// the BEGIN), so row-level
// security confines every statement in fn to that tenant. It is the one way
// repositories reach tenant-owned tables.
func (db *DB) InTenant(ctx context.Context, fn func(ctx context.Context, tx bun.Tx) error) error {
	id, ok := tenancy.ID(ctx)
	if !ok {
		return ErrNoTenant
	}
	return db.do(ctx, func(ctx context.Context) error {
		conn, err := db.acquire(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		// BEGIN carries the set_config (one round trip for both).
		return conn.RunInTx(withTxTenant(ctx, id), &sql.TxOptions{}, fn)
	})
}

// acquire takes a pooled connection, waiting at most the acquire timeout.
func (db *DB) acquire(ctx context.Context) (bun.Conn, error) {
	actx, cancel := ctx, context.CancelFunc(func() {})
	if db.acquireTimeout > 0 {
		actx, cancel = context.WithTimeout(ctx, db.acquireTimeout)
	}
	defer cancel()
	conn, err := db.Bun.Conn(actx)
	if err != nil && actx.Err() != nil && ctx.Err() == nil {
		return conn, fmt.Errorf("no database connection within %s: %w", db.acquireTimeout, context.DeadlineExceeded)
	}
	return conn, err
}

// lockRequest holds, until tx ends, a lock on a client's request id, so
// concurrent retries of one create take turns: the later ones find the row
// the first one made instead of inserting another.
func lockRequest(ctx context.Context, tx bun.Tx, requestID uuid.UUID) error {
	_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(hashtext(?))", requestID.String())
	return err
}
