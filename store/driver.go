package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// A tenant transaction begins and sets its tenant in one round trip: BEGIN
// and set_config go to PostgreSQL as one simple-protocol message, instead of
// BEGIN, then set_config, each waiting for its answer. The database/sql
// connections are pgx's, wrapped so that BeginTx does this when the context
// says which tenant the transaction is for.

type txTenantKey struct{}

// withTxTenant marks ctx: a transaction begun with it acts for tenant.
func withTxTenant(ctx context.Context, tenant uuid.UUID) context.Context {
	return context.WithValue(ctx, txTenantKey{}, tenant)
}

// tenantBegin is the BEGIN of a tenant transaction; a uuid's text is
// hex digits and dashes, so it is safe inline.
func tenantBegin(tenant uuid.UUID) string {
	return "BEGIN; SELECT set_config('app.tenant_id', '" + tenant.String() + "', true)"
}

// openSQL returns a database/sql handle over pool whose connections begin
// tenant transactions in one round trip.
func openSQL(pool *pgxpool.Pool) *sql.DB {
	db := sql.OpenDB(tenantConnector{stdlib.GetPoolConnector(pool)})
	db.SetMaxIdleConns(0) // the pgx pool keeps the idle connections
	return db
}

type tenantConnector struct{ driver.Connector }

func (c tenantConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	sc, ok := conn.(*stdlib.Conn)
	if !ok {
		return conn, nil
	}
	return &tenantConn{sc}, nil
}

// tenantConn is pgx's database/sql connection with its own BeginTx.
type tenantConn struct{ *stdlib.Conn }

func (c *tenantConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	tenant, ok := ctx.Value(txTenantKey{}).(uuid.UUID)
	if !ok || opts.ReadOnly || sql.IsolationLevel(opts.Isolation) != sql.LevelDefault {
		return c.Conn.BeginTx(ctx, opts)
	}
	if c.Conn.Conn().IsClosed() {
		return nil, driver.ErrBadConn
	}
	tx, err := c.Conn.Conn().BeginTx(ctx, pgx.TxOptions{BeginQuery: tenantBegin(tenant)})
	if err != nil {
		return nil, err
	}
	a := auditedFrom(ctx)
	if a != nil {
		a.began()
	}
	return pgxTx{ctx: ctx, tx: tx, audited: a}, nil
}

type pgxTx struct {
	ctx     context.Context
	tx      pgx.Tx
	audited *Audited
}

// Commit appends the request's audit entry first when this transaction
// wrote: the entry and the change commit together or not at all.
func (t pgxTx) Commit() error {
	if t.audited == nil {
		return t.tx.Commit(t.ctx)
	}
	return t.audited.commitWith(t.ctx, t.tx)
}

func (t pgxTx) Rollback() error {
	if t.audited != nil {
		t.audited.rolledBack()
	}
	return t.tx.Rollback(t.ctx)
}

// queryTracer times every statement for db_query_duration_seconds.
type queryTracer struct {
	observe func(operation string, d time.Duration)
}

type queryStartKey struct{}

type queryStart struct {
	at time.Time
	op string
}

func (q queryTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if q.observe == nil {
		return ctx
	}
	return context.WithValue(ctx, queryStartKey{}, queryStart{at: time.Now(), op: Operation(data.SQL)})
}

func (q queryTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	if s, ok := ctx.Value(queryStartKey{}).(queryStart); ok {
		q.observe(s.op, time.Since(s.at))
	}
	// A statement that changed rows makes its transaction carry the
	// request's audit entry (an UPDATE that matched nothing does not).
	if data.Err == nil && data.CommandTag.RowsAffected() > 0 &&
		(data.CommandTag.Insert() || data.CommandTag.Update() || data.CommandTag.Delete()) {
		if a := auditedFrom(ctx); a != nil {
			a.noteWrite()
		}
	}
}

// operations are the label values of db_query_duration_seconds.
var operations = []string{"select", "insert", "update", "delete", "begin", "commit", "rollback", "with", "set"}

// Operation is a statement's kind: its first keyword when it is one of a
// few (a bounded label), else "other".
func Operation(sql string) string {
	sql = strings.TrimLeft(sql, " \t\r\n(")
	end := strings.IndexAny(sql, " \t\r\n;(")
	if end < 0 {
		end = len(sql)
	}
	for _, op := range operations { // no allocation: it runs for every statement
		if strings.EqualFold(sql[:end], op) {
			return op
		}
	}
	return "other"
}
