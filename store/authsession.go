package store

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
)

// TokenSessions are the sessions of the identity provider that users'
// tokens carry (the sid claim), as avb has seen and ended them.
type TokenSessions struct{ db *DB }

// TokenSessions returns the token session repository.
func (db *DB) TokenSessions() TokenSessions { return TokenSessions{db} }

// Seen records that the user in ctx's tenant used the session key, and
// reports whether the identity provider has ended it. The first use of a
// key in a tenant inserts its row, and records login (the entry ctx
// carries, store.WithAudit) with it.
func (r TokenSessions) Seen(ctx context.Context, key string, user uuid.UUID, subject string, expires time.Time) (loggedOut bool, err error) {
	err = r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		if err := tx.NewRaw("SELECT EXISTS (SELECT 1 FROM auth_logouts WHERE session_key = ?)", key).Scan(ctx, &loggedOut); err != nil {
			return err
		}
		if loggedOut {
			return nil
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO auth_sessions (session_key, user_id, subject, expires_at)
			VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`, key, user, subject, expires)
		return err
	})
	return loggedOut, err
}

// Logout ends a session of the identity provider (by sid, or all of a
// subject's when sid is empty), records logout in the audit log of every
// tenant it was used in, and returns the session keys it ended.
func (r TokenSessions) Logout(ctx context.Context, sid, subject string) ([]string, error) {
	var keys []string
	err := r.db.do(ctx, func(ctx context.Context) error {
		keys = keys[:0]
		return r.db.Bun.NewRaw("SELECT auth_logout(?, ?)", sid, subject).Scan(ctx, &keys)
	})
	return keys, err
}
