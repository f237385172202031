package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one versioned schema change, NNNN_name.up.sql with its
// NNNN_name.down.sql.
type Migration struct {
	Version int
	Name    string
	Up      string
	Down    string
}

// MigrationStatus is a migration and when it was applied (zero if pending).
type MigrationStatus struct {
	Migration
	AppliedAt time.Time
}

var migrationName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$`)

// Migrations returns the embedded migrations in version order. Every version
// has both an up and a down file.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	byVersion := map[int]*Migration{}
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %q is not NNNN_name.(up|down).sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		body, err := fs.ReadFile(migrationFiles, "migrations/"+e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		mig := byVersion[v]
		if mig == nil {
			mig = &Migration{Version: v, Name: m[2]}
			byVersion[v] = mig
		}
		if m[3] == "up" {
			mig.Up = string(body)
		} else {
			mig.Down = string(body)
		}
	}
	out := make([]Migration, 0, len(byVersion))
	for _, m := range byVersion {
		if m.Up == "" || m.Down == "" {
			return nil, fmt.Errorf("migration %04d_%s needs both an up and a down file", m.Version, m.Name)
		}
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Migration) int { return a.Version - b.Version })
	return out, nil
}

// migrationLock is the advisory lock key that serializes migrators, so two
// instances starting together do not race.
const migrationLock = 0x61766200 // "avb\0"

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    integer PRIMARY KEY,
	name       text NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
)`

// MigrateUp applies every pending migration, each in its own transaction, and
// returns the ones it applied.
func MigrateUp(ctx context.Context, pool *pgxpool.Pool) ([]Migration, error) {
	var applied []Migration
	err := withMigrationLock(ctx, pool, func(conn *pgx.Conn) error {
		status, err := migrationStatus(ctx, conn)
		if err != nil {
			return err
		}
		for _, s := range status {
			if !s.AppliedAt.IsZero() {
				continue
			}
			if err := runMigration(ctx, conn, s.Migration, true); err != nil {
				return err
			}
			applied = append(applied, s.Migration)
		}
		return nil
	})
	return applied, err
}

// MigrateDown reverts the newest steps applied migrations and returns them.
func MigrateDown(ctx context.Context, pool *pgxpool.Pool, steps int) ([]Migration, error) {
	var reverted []Migration
	err := withMigrationLock(ctx, pool, func(conn *pgx.Conn) error {
		status, err := migrationStatus(ctx, conn)
		if err != nil {
			return err
		}
		for i := len(status) - 1; i >= 0 && len(reverted) < steps; i-- {
			if status[i].AppliedAt.IsZero() {
				continue
			}
			if err := runMigration(ctx, conn, status[i].Migration, false); err != nil {
				return err
			}
			reverted = append(reverted, status[i].Migration)
		}
		return nil
	})
	return reverted, err
}

// MigrationStatuses lists every known migration and whether it is applied.
func MigrationStatuses(ctx context.Context, pool *pgxpool.Pool) ([]MigrationStatus, error) {
	var out []MigrationStatus
	err := withMigrationLock(ctx, pool, func(conn *pgx.Conn) error {
		var err error
		out, err = migrationStatus(ctx, conn)
		return err
	})
	return out, err
}

func withMigrationLock(ctx context.Context, pool *pgxpool.Pool, fn func(*pgx.Conn) error) error {
	c, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connect for migrations: %w", err)
	}
	defer c.Release()
	conn := c.Conn()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLock); err != nil {
		return fmt.Errorf("take migration lock: %w", err)
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrationLock) }()
	if _, err := conn.Exec(ctx, createMigrationsTable); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	return fn(conn)
}

func migrationStatus(ctx context.Context, conn *pgx.Conn) ([]MigrationStatus, error) {
	all, err := Migrations()
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, "SELECT version, applied_at FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	applied := map[int]time.Time{}
	var v int
	var at time.Time
	if _, err := pgx.ForEachRow(rows, []any{&v, &at}, func() error { applied[v] = at; return nil }); err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	known := map[int]bool{}
	out := make([]MigrationStatus, len(all))
	for i, m := range all {
		out[i] = MigrationStatus{Migration: m, AppliedAt: applied[m.Version]}
		known[m.Version] = true
	}
	for v := range applied {
		if !known[v] {
			return nil, fmt.Errorf("database has migration %04d, which this binary does not know: it is older than the schema", v)
		}
	}
	return out, nil
}

func runMigration(ctx context.Context, conn *pgx.Conn, m Migration, up bool) error {
	dir, body := "up", m.Up
	if !up {
		dir, body = "down", m.Down
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// No arguments: the simple protocol runs the whole file, many statements.
		if _, err := tx.Exec(ctx, body); err != nil {
			return fmt.Errorf("migration %04d_%s %s: %w", m.Version, m.Name, dir, err)
		}
		var err error
		if up {
			_, err = tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name)
		} else {
			_, err = tx.Exec(ctx, "DELETE FROM schema_migrations WHERE version = $1", m.Version)
		}
		if err != nil {
			return fmt.Errorf("record migration %04d_%s %s: %w", m.Version, m.Name, dir, err)
		}
		return nil
	})
}
