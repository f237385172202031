package billing_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/billing"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

// The month's counters agree with counting the rows they stand for.
func TestMonthUsageCountersAgreeWithTheRows(t *testing.T) {
	e := newEnv(t)
	ten := e.tenant(t, "pro")
	var audio float64
	for i := range 25 {
		e.usage(t, ten.ID, float64(i), 1.5, 10, 10)
		audio += float64(i) + 1.5
	}
	ctx := tenancy.With(context.Background(), ten.ID)
	start, end := billing.Month(time.Now())
	sessions, seconds, err := e.db.MonthUsage(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	counted, err := e.db.MonthSessions(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	totals, err := e.db.UsageTotals(ctx, start, end)
	if err != nil {
		t.Fatal(err)
	}
	if sessions != int64(counted) || sessions != 25 || math.Abs(seconds-audio) > 1e-9 ||
		math.Abs(seconds-totals["audio_in_seconds"]-totals["audio_out_seconds"]) > 1e-9 {
		t.Fatalf("counters %d sessions %.1f s; rows %d sessions %.1f s", sessions, seconds, counted, totals["audio_in_seconds"]+totals["audio_out_seconds"])
	}
	// Another tenant's month is its own.
	other := e.tenant(t, "pro")
	if n, s, err := e.db.MonthUsage(tenancy.With(context.Background(), other.ID), start); err != nil || n != 0 || s != 0 {
		t.Fatalf("other tenant: %d %v %v", n, s, err)
	}
}

// BenchmarkMonthUsage compares what a quota check reads, for a tenant with
// 20,000 sessions (100,000 ledger rows) this month: counting the rows (the
// sessions, and the ledger's audio) against the month's counter row.
func BenchmarkMonthUsage(b *testing.B) {
	e := newEnv(b)
	ten := e.tenant(b, "pro")
	if _, err := e.owner.Bun.ExecContext(context.Background(), `
		WITH s AS (INSERT INTO sessions (tenant_id, status, created_at)
		           SELECT ?, 'completed', now() - make_interval(secs => g) FROM generate_series(1, 20000) g RETURNING id, created_at)
		INSERT INTO usage_ledger (tenant_id, session_id, kind, quantity, recorded_at)
		SELECT ?, s.id, k.kind, k.q, s.created_at FROM s,
		       (VALUES ('session', 1), ('audio_in_seconds', 93), ('audio_out_seconds', 41), ('input_tokens', 420), ('output_tokens', 96)) AS k(kind, q)`,
		ten.ID, ten.ID); err != nil {
		b.Fatal(err)
	}
	for _, table := range []string{"sessions", "usage_ledger"} {
		if _, err := e.owner.Bun.ExecContext(context.Background(), "VACUUM ANALYZE "+table); err != nil {
			b.Fatal(err)
		}
	}
	ctx := tenancy.With(context.Background(), ten.ID)
	start, end := billing.Month(time.Now())
	b.Run("count rows", func(b *testing.B) {
		for b.Loop() {
			if _, err := e.db.MonthSessions(ctx, start); err != nil {
				b.Fatal(err)
			}
			if _, err := e.db.UsageTotals(ctx, start, end); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("counter row", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := e.db.MonthUsage(ctx, start); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSessionInsert is what keeping the month's counter adds to
// creating a session: the same insert with the counter's trigger on and off.
func BenchmarkSessionInsert(b *testing.B) {
	e := newEnv(b)
	ten := e.tenant(b, "pro")
	ctx := tenancy.With(context.Background(), ten.ID)
	for _, on := range []bool{true, false} {
		state := map[bool]string{true: "ENABLE", false: "DISABLE"}[on]
		if _, err := e.owner.Bun.ExecContext(ctx, "ALTER TABLE sessions "+state+" TRIGGER usage_month_sessions"); err != nil {
			b.Fatal(err)
		}
		b.Run(map[bool]string{true: "with counter", false: "without counter"}[on], func(b *testing.B) {
			for b.Loop() {
				if err := e.db.Sessions().Create(ctx, &store.Session{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
