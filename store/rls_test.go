package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

// migratedApp returns a migrated fresh database, opened as the avb_app role.
func migratedApp(t *testing.T) *store.DB {
	t.Helper()
	db, owner := testenv.AppDB(t)
	odb, err := store.Open(t.Context(), config.Database{URL: owner, MaxConns: 1, ConnectTimeout: 5 * time.Second, MaxConnLifetime: time.Hour, MaxConnIdleTime: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer odb.Close()
	if err := odb.CheckRole(t.Context()); err == nil {
		t.Fatal("the owner role must be reported as bypassing row-level security")
	}
	if err := db.CheckRole(t.Context()); err != nil {
		t.Fatalf("avb_app must be subject to row-level security: %v", err)
	}
	return db
}

// Property 4: with several tenants and random data, every get and list
// through the repositories returns only the caller's rows, inserts land in
// the caller's tenant, and a raw query with no tenant set returns nothing.
func TestPropertyTenantIsolation(t *testing.T) {
	t.Parallel()
	db := migratedApp(t)
	n := 0
	rapid.Check(t, func(rt *rapid.T) {
		ctx := context.Background()
		n++
		tenants := make([]uuid.UUID, rapid.IntRange(2, 4).Draw(rt, "tenants"))
		owned := map[uuid.UUID]map[uuid.UUID]bool{} // tenant -> user ids
		for i := range tenants {
			ten := &store.Tenant{Name: "T", Slug: fmt.Sprintf("p4-%d-%d-%s", n, i, uuid.NewString()[:8]), Tier: store.TierPro}
			if err := db.Tenants().Create(ctx, ten); err != nil {
				rt.Fatal(err)
			}
			tenants[i] = ten.ID
			owned[ten.ID] = map[uuid.UUID]bool{}
		}
		for i, k := range rapid.SliceOfN(rapid.IntRange(0, len(tenants)-1), 1, 12).Draw(rt, "users") {
			tctx := tenancy.With(ctx, tenants[k])
			u, err := db.Users().Upsert(tctx, &store.User{Subject: fmt.Sprintf("p4|%d|%d|%s", n, i, uuid.NewString())})
			if err != nil {
				rt.Fatal(err)
			}
			if u.TenantID != tenants[k] {
				rt.Fatalf("user landed in tenant %s, want %s", u.TenantID, tenants[k])
			}
			owned[tenants[k]][u.ID] = true
		}
		for _, tid := range tenants {
			tctx := tenancy.With(ctx, tid)
			list, _, err := db.Users().List(tctx, false, 500, "")
			if err != nil {
				rt.Fatal(err)
			}
			if len(list) != len(owned[tid]) {
				rt.Fatalf("tenant %s lists %d users, owns %d", tid, len(list), len(owned[tid]))
			}
			for _, u := range list {
				if !owned[tid][u.ID] || u.TenantID != tid {
					rt.Fatalf("tenant %s sees user %s of tenant %s", tid, u.ID, u.TenantID)
				}
			}
			for other, users := range owned {
				if other == tid {
					continue
				}
				for id := range users {
					if _, err := db.Users().Get(tctx, id); err != store.ErrNotFound {
						rt.Fatalf("tenant %s reads user %s of tenant %s: %v", tid, id, other, err)
					}
					if _, err := db.Users().Deactivate(tctx, id); err != store.ErrNotFound {
						rt.Fatalf("tenant %s deactivates user %s of tenant %s: %v", tid, id, other, err)
					}
				}
			}
		}
		// A query that forgets the tenant sees nothing, not everything.
		var count int
		if err := db.Pool.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&count); err != nil {
			rt.Fatal(err)
		}
		if count != 0 {
			rt.Fatalf("raw query without a tenant sees %d users", count)
		}
		if _, _, err := db.Users().List(ctx, false, 10, ""); err != store.ErrNoTenant {
			rt.Fatalf("repository without a tenant: %v, want ErrNoTenant", err)
		}
	})
}

// A row written into another tenant is refused by the policy's WITH CHECK.
func TestRLSRefusesWritesIntoAnotherTenant(t *testing.T) {
	t.Parallel()
	db := migratedApp(t)
	ctx := context.Background()
	a, b := &store.Tenant{Name: "A", Slug: "rls-a"}, &store.Tenant{Name: "B", Slug: "rls-b"}
	for _, ten := range []*store.Tenant{a, b} {
		if err := db.Tenants().Create(ctx, ten); err != nil {
			t.Fatal(err)
		}
	}
	err := db.InTenant(tenancy.With(ctx, a.ID), func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO users (tenant_id, subject) VALUES (?, 'intruder')", b.ID)
		return err
	})
	if err == nil {
		t.Fatal("insert into another tenant succeeded")
	}
	if _, err := db.Users().Upsert(tenancy.With(ctx, a.ID), &store.User{Subject: "shared-sub"}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Users().Upsert(tenancy.With(ctx, b.ID), &store.User{Subject: "shared-sub"}); err != store.ErrWrongTenant {
		t.Fatalf("the same subject in another tenant: %v, want ErrWrongTenant", err)
	}
}
