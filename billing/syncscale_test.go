package billing_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/billing"
	"github.com/agentvoicebox/avb/billing/lagotest"
	"github.com/agentvoicebox/avb/internal/testenv"
)

// TestSyncAtScale measures one tenant's sync of AVB_BILLING_SCALE ledger
// rows (e.g. 100000): against a bare HTTP handler that accepts anything
// (the floor: reading, marking, encoding) and against the Lago stand-in,
// in the same run, with the heap's peak during each.
func TestSyncAtScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("AVB_BILLING_SCALE"))
	if n == 0 {
		t.Skip("set AVB_BILLING_SCALE=100000 to measure")
	}
	e := newEnv(t)
	ten := e.tenant(t, "pro")
	ctx := context.Background()
	// n rows: n/5 sessions with 5 billable rows each, a minute apart.
	if _, err := e.owner.Bun.ExecContext(ctx, `
		WITH s AS (INSERT INTO sessions (tenant_id, status, created_at)
		           SELECT ?, 'completed', now() - make_interval(mins => g) FROM generate_series(1, ?) g RETURNING id, created_at)
		INSERT INTO usage_ledger (tenant_id, session_id, kind, quantity, recorded_at)
		SELECT ?, s.id, k.kind, k.q, s.created_at FROM s,
		       (VALUES ('session', 1), ('audio_in_seconds', 93), ('audio_out_seconds', 41), ('input_tokens', 420), ('output_tokens', 96)) AS k(kind, q)`,
		ten.ID, n/5, ten.ID); err != nil {
		t.Fatal(err)
	}
	// As autovacuum would have by then on a table this size.
	if _, err := e.owner.Bun.ExecContext(ctx, "ANALYZE usage_ledger"); err != nil {
		t.Fatal(err)
	}
	var posts atomic.Int64
	bare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		posts.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
	}))
	defer bare.Close()
	lg := lagotest.New(t)
	run := func(name, url string) time.Duration {
		if _, err := e.owner.Bun.ExecContext(ctx, "UPDATE usage_ledger SET synced_at = NULL WHERE tenant_id = ?", ten.ID); err != nil {
			t.Fatal(err)
		}
		heap := testenv.WatchHeap()
		s := &billing.Syncer{DB: e.db, Lago: client(t, url), Log: quiet}
		start := time.Now()
		sent, err := s.SyncTenant(ctx, ten.ID)
		took := time.Since(start)
		peak, allocated := heap.Stop()
		if err != nil || sent != n {
			t.Fatalf("%s: sent %d of %d: %v", name, sent, n, err)
		}
		t.Logf("%s: %d rows in %s (%.0f rows/s), heap peak %.1f MiB over %.1f MiB before, %.0f MiB allocated",
			name, n, took.Round(time.Millisecond), float64(n)/took.Seconds(), float64(peak-heap.Before.HeapInuse)/(1<<20),
			float64(heap.Before.HeapInuse)/(1<<20), float64(allocated)/(1<<20))
		return took
	}
	floor := run("bare handler", bare.URL)
	full := run("lago stand-in", lg.URL)
	t.Logf("stand-in / bare: %.2fx (%d batches)", float64(full)/float64(floor), posts.Load())
	if got := len(lg.Events()); got != n {
		t.Fatalf("Lago holds %d events, want %d", got, n)
	}
}
