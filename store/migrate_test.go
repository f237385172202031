package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/store"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func openTestDB(t *testing.T) *store.DB {
	t.Helper()
	db, err := store.Open(t.Context(), config.Database{
		URL: testenv.Postgres(t), MaxConns: 4, ConnectTimeout: 5 * time.Second,
		MaxConnLifetime: time.Hour, MaxConnIdleTime: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

func tables(t *testing.T, db *store.DB) map[string]bool {
	t.Helper()
	rows, err := db.Pool.Query(t.Context(), "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out[n] = true
	}
	return out
}

// Up, down to nothing, and up again on a fresh database: every down file
// undoes its up file completely, and every up file applies to a clean schema.
func TestMigrateUpDownUp(t *testing.T) {
	t.Parallel()
	db := openTestDB(t)
	ctx := t.Context()
	all, err := store.Migrations()
	if err != nil || len(all) == 0 {
		t.Fatalf("embedded migrations: %v (%d)", err, len(all))
	}

	applied, err := store.MigrateUp(ctx, db.Pool)
	if err != nil || len(applied) != len(all) {
		t.Fatalf("first up: applied %d of %d: %v", len(applied), len(all), err)
	}
	afterUp := tables(t, db)
	if !afterUp["tenants"] || !afterUp["schema_migrations"] {
		t.Fatalf("tables after up: %v", afterUp)
	}
	if again, err := store.MigrateUp(ctx, db.Pool); err != nil || len(again) != 0 {
		t.Fatalf("second up must be a no-op: %v %v", again, err)
	}

	reverted, err := store.MigrateDown(ctx, db.Pool, len(all))
	if err != nil || len(reverted) != len(all) {
		t.Fatalf("down: reverted %d of %d: %v", len(reverted), len(all), err)
	}
	if left := tables(t, db); len(left) != 1 || !left["schema_migrations"] {
		t.Fatalf("down left tables behind: %v", left)
	}

	if _, err := store.MigrateUp(ctx, db.Pool); err != nil {
		t.Fatalf("up after down: %v", err)
	}
	status, err := store.MigrationStatuses(ctx, db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range status {
		if s.AppliedAt.IsZero() {
			t.Fatalf("migration %04d pending after up", s.Version)
		}
	}
}

// Two instances migrating at once apply each migration exactly once.
func TestConcurrentMigratorsDoNotRace(t *testing.T) {
	t.Parallel()
	db := openTestDB(t)
	errs := make(chan error, 2)
	counts := make(chan int, 2)
	for range 2 {
		go func() {
			applied, err := store.MigrateUp(context.Background(), db.Pool)
			errs <- err
			counts <- len(applied)
		}()
	}
	total := 0
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		total += <-counts
	}
	all, _ := store.Migrations()
	if total != len(all) {
		t.Fatalf("applied %d migrations in total, want %d", total, len(all))
	}
}

func TestEnsureDatabaseIsIdempotent(t *testing.T) {
	t.Parallel()
	url := testenv.Postgres(t)
	for range 2 {
		if err := store.EnsureDatabase(t.Context(), url); err != nil {
			t.Fatal(err)
		}
	}
}
