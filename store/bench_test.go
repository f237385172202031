package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"

	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

// BenchmarkTenantScopedRead compares reading one user through the
// tenant-scoped repository (transaction + SET LOCAL app.tenant_id + RLS) with
// the same row read by a plain query outside any transaction.
func BenchmarkTenantScopedRead(b *testing.B) {
	owner := testenv.Postgres(b)
	cfg := config.Database{URL: owner, MaxConns: 4, ConnectTimeout: 5 * time.Second, MaxConnLifetime: time.Hour, MaxConnIdleTime: time.Minute}
	odb, err := store.Open(b.Context(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer odb.Close()
	if _, err := store.MigrateUp(b.Context(), odb.Pool); err != nil {
		b.Fatal(err)
	}
	cfg.URL = testenv.AppURL(owner)
	db, err := store.Open(b.Context(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ten := &store.Tenant{Name: "B", Slug: "bench"}
	if err := db.Tenants().Create(b.Context(), ten); err != nil {
		b.Fatal(err)
	}
	ctx := tenancy.With(context.Background(), ten.ID)
	u, err := db.Users().Upsert(ctx, &store.User{Subject: "bench"})
	if err != nil {
		b.Fatal(err)
	}

	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var id uuid.UUID
			var email string
			if err := odb.Pool.QueryRow(context.Background(), "SELECT id, email FROM users WHERE id = $1", u.ID).Scan(&id, &email); err != nil && err != pgx.ErrNoRows {
				b.Fatal(err)
			}
		}
	})
	b.Run("tenant_scoped", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := db.Users().Get(ctx, u.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
	// One statement in a tenant transaction, with the tenant sent with the
	// BEGIN (as InTenant does), and sent by its own statement after the
	// BEGIN (one more round trip).
	b.Run("tx_pipelined", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var email string
			err := db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
				return tx.QueryRowContext(ctx, "SELECT email FROM users WHERE id = ?", u.ID).Scan(&email)
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tx_unpipelined", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var email string
			err := db.Bun.RunInTx(context.Background(), nil, func(ctx context.Context, tx bun.Tx) error {
				if _, err := tx.ExecContext(ctx, "SELECT set_config('app.tenant_id', ?, true)", ten.ID.String()); err != nil {
					return err
				}
				return tx.QueryRowContext(ctx, "SELECT email FROM users WHERE id = ?", u.ID).Scan(&email)
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
