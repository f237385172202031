package store_test

import (
	"context"
	"strconv"
	"sync/atomic"
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

// BenchmarkAuditedWrite compares a resource update with and without its
// audit entry (the entry is one more statement, audit_append, in the
// update's transaction), one writer at a time and with parallel writers
// of one tenant (who take turns on the tenant's chain head) or of several.
func BenchmarkAuditedWrite(b *testing.B) {
	db, _ := testenv.AppDB(b)
	tenants := make([]context.Context, 8)
	projects := make([]uuid.UUID, 8) // one in each tenant
	own := make([]uuid.UUID, 8)      // eight in the first tenant
	for i := range tenants {
		ten := &store.Tenant{Name: "B", Slug: "audit-bench-" + uuid.NewString()[:8], Tier: store.TierEnterprise}
		if err := db.Tenants().Create(b.Context(), ten); err != nil {
			b.Fatal(err)
		}
		tenants[i] = tenancy.With(context.Background(), ten.ID)
		p := &store.Resource{Name: "p"}
		if _, err := db.Resources(store.Projects).Create(tenants[i], p); err != nil {
			b.Fatal(err)
		}
		projects[i] = p.ID
		q := &store.Resource{Name: "q" + strconv.Itoa(i)}
		if _, err := db.Resources(store.Projects).Create(tenants[0], q); err != nil {
			b.Fatal(err)
		}
		own[i] = q.ID
	}
	update := func(b *testing.B, ctx context.Context, project uuid.UUID, audited bool) {
		if audited {
			ctx, _ = store.WithAudit(ctx, store.AuditEntry{ActorType: "system", Action: "update", ResourceType: "project"})
		}
		if _, err := db.Resources(store.Projects).Update(ctx, project, func(r *store.Resource) error {
			r.Spec = []byte(`{"description":"` + uuid.NewString() + `"}`)
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	for _, audited := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "audited"}[audited]
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				update(b, tenants[0], projects[0], audited)
			}
		})
		b.Run(name+"_parallel_one_tenant", func(b *testing.B) {
			b.SetParallelism(4)
			var n atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				i := int(n.Add(1)) % len(own)
				for pb.Next() {
					update(b, tenants[0], own[i], audited)
				}
			})
		})
		b.Run(name+"_parallel_tenants", func(b *testing.B) {
			b.SetParallelism(4)
			var n atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				i := int(n.Add(1)) % len(tenants)
				for pb.Next() {
					update(b, tenants[i], projects[i], audited)
				}
			})
		})
	}
}
