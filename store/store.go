// Package store is the PostgreSQL data layer: a pgx pool (and bun on top of
// it for queries), embedded versioned migrations, and the repositories.
package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/platform/dependency"
)

// DB is the connection pool, with a bun handle sharing it.
type DB struct {
	Pool *pgxpool.Pool
	Bun  *bun.DB
	sql  *sql.DB

	// guard bounds every call: acquiring a connection within
	// acquireTimeout, a whole transaction within queryTimeout, and fails
	// fast while the database is known to be down. Nil: unbounded (tools).
	guard          *dependency.Guard
	acquireTimeout time.Duration
	queryTimeout   time.Duration
	// rows caches the cached kinds of resources (nil: no cache).
	rows RowCache
}

// RowCache caches rows for the tenant in ctx, by kind and id
// (platform/cache is one).
type RowCache interface {
	Fetch(ctx context.Context, kind, id string, load func(context.Context) ([]byte, error)) ([]byte, error)
	Delete(ctx context.Context, kind string, ids ...string) error
}

// CacheRows puts c in front of the reads of projects, personas and voice
// configs; their writes invalidate it.
func (db *DB) CacheRows(c RowCache) { db.rows = c }

// Guard puts every call of the repositories under g: a connection must be
// acquired within cfg.AcquireTimeout and a transaction must finish within
// cfg.QueryTimeout (both capped by the request's own deadline).
func (db *DB) Guard(g *dependency.Guard, cfg config.Database) {
	g.IsFailure = isDatabaseFailure
	db.guard, db.acquireTimeout, db.queryTimeout = g, cfg.AcquireTimeout, cfg.QueryTimeout
}

// isDatabaseFailure reports errors that mean PostgreSQL is unreachable,
// overloaded or cancelled our statement for taking too long.
func isDatabaseFailure(err error) bool {
	if pgconn.Timeout(err) || pgconn.SafeToRetry(err) || errors.Is(err, pgconn.ErrConnClosed) || errors.As(err, new(*pgconn.ConnectError)) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		c := pgErr.Code
		return c == "57014" || c == "57P01" || c == "57P02" || c == "57P03" || c == "53300" || strings.HasPrefix(c, "08") || c == "25P03"
	}
	return false
}

// do runs fn under the guard with the query deadline.
func (db *DB) do(ctx context.Context, fn func(ctx context.Context) error) error {
	if db.guard == nil {
		return fn(ctx)
	}
	return db.guard.Do(ctx, db.queryTimeout, fn)
}

// Open creates the pool. It does not wait for the database: a server starts
// and reports the database in its readiness until it answers.
func Open(ctx context.Context, cfg config.Database, opts ...Option) (*DB, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	pc.MaxConns = int32(cfg.MaxConns)
	pc.MinConns = int32(cfg.MinConns)
	pc.MaxConnLifetime = cfg.MaxConnLifetime
	pc.MaxConnIdleTime = cfg.MaxConnIdleTime
	pc.ConnConfig.ConnectTimeout = cfg.ConnectTimeout
	// PostgreSQL itself ends statements and transactions that outlive
	// their deadline, should avb's own deadline not reach it (a hung link).
	if cfg.StatementTimeout > 0 {
		pc.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(cfg.StatementTimeout.Milliseconds(), 10)
	}
	if cfg.IdleInTxTimeout > 0 {
		pc.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt(cfg.IdleInTxTimeout.Milliseconds(), 10)
	}
	// The tracer also tells a request's audit entry that its transaction
	// changed rows.
	pc.ConnConfig.Tracer = queryTracer{observe: o.observe}
	if o.credentials != nil {
		pc.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
			cc.User, cc.Password = o.credentials()
			return nil
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("create database pool: %w", err)
	}
	sqldb := openSQL(pool)
	return &DB{Pool: pool, Bun: bun.NewDB(sqldb, pgdialect.New()), sql: sqldb}, nil
}

// Option changes how Open builds the pool.
type Option func(*options)

type options struct {
	observe     func(operation string, d time.Duration)
	credentials func() (user, password string)
}

// Credentials has each new connection log in with what credentials returns
// (leased from Vault), instead of the URL's user and password. After they
// change, RetireConnections moves the pool to the new ones.
func Credentials(credentials func() (user, password string)) Option {
	return func(o *options) { o.credentials = credentials }
}

// RetireConnections closes the pool's idle connections now and its busy
// ones when they are released: what runs on them finishes, and new
// connections are opened (with the current credentials) as needed.
func (db *DB) RetireConnections() { db.Pool.Reset() }

// ObserveQueries has every statement's duration reported to observe, with
// its Operation.
func ObserveQueries(observe func(operation string, d time.Duration)) Option {
	return func(o *options) { o.observe = observe }
}

// MigrationConfig is the pool configuration of the schema owner, for
// migrations: no idle connections, and no statement or idle-in-transaction
// timeout (a migration may rightly run long; its caller bounds it).
func MigrationConfig(cfg config.Database) config.Database {
	owner := cfg
	owner.URL, owner.MinConns = cfg.MigrationURL, 0
	owner.StatementTimeout, owner.IdleInTxTimeout = 0, 0
	return owner
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	return db.Pool.Ping(ctx)
}

// Close closes the pool.
func (db *DB) Close() {
	_ = db.sql.Close()
	db.Pool.Close()
}

// EnsureDatabase creates the database named in rawURL if it does not exist,
// connecting to the server's "postgres" database to do so. avb dev and the
// tests use it; production databases are provisioned outside avb.
func EnsureDatabase(ctx context.Context, rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("parse database url: %w", err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	if name == "" {
		return errors.New("database url names no database")
	}
	admin := *u
	admin.Path = "/postgres"
	conn, err := pgx.Connect(ctx, admin.String())
	if err != nil {
		return fmt.Errorf("connect to postgres at %s: %w", u.Host, err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// ErrBypassesRLS: the server's database role would see every tenant's rows.
var ErrBypassesRLS = errors.New("AVB_DATABASE_URL connects as a role that bypasses row-level security (superuser, BYPASSRLS or table owner); use the avb_app role")

// CheckRole verifies the pool's role is subject to row-level security.
func (db *DB) CheckRole(ctx context.Context) error {
	var super, bypass, owner bool
	err := db.Pool.QueryRow(ctx, `SELECT r.rolsuper, r.rolbypassrls,
		EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'public' AND tablename = 'users' AND tableowner = current_user)
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(&super, &bypass, &owner)
	if err != nil {
		return fmt.Errorf("check database role: %w", err)
	}
	if super || bypass || owner {
		return ErrBypassesRLS
	}
	return nil
}
