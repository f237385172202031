package store_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/server"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

// TestAuditLogAtScale measures the audit log of one tenant holding
// AVB_AUDIT_SCALE entries (say 1000000; skipped when unset): the first
// page of a filtered list, the CSV export's throughput and memory, and a
// full verification of the chain.
func TestAuditLogAtScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("AVB_AUDIT_SCALE"))
	if n <= 0 {
		t.Skip("set AVB_AUDIT_SCALE=1000000 to measure")
	}
	db, owner := ownerDB(t)
	ctx := newTenant(t, db, store.TierPro)
	tenant := mustID(ctx)
	start := time.Now()
	// Entries over the last 60 days, through the chain (as the application appends them).
	if _, err := owner.Exec(t.Context(), "SELECT audit_ensure_partitions(now() - interval '70 days', 3)"); err != nil {
		t.Fatal(err)
	}
	// Batches of 1000, each its own transaction (as appends come, one per
	// change: a chain row updated a million times in one transaction would
	// walk ever longer version chains).
	for from := 1; from <= n; from += 1000 {
		if _, err := owner.Exec(t.Context(), fmt.Sprintf(`DO $$
		BEGIN
		  FOR i IN %d..%d LOOP
		    PERFORM audit_chain_insert('%s', now() - interval '60 days' + (i * interval '60 days' / %d),
		      'user', gen_random_uuid(), 'ada@example.com', (ARRAY['create','update','delete','login','permission_change'])[1 + i %% 5],
		      'project', gen_random_uuid()::text, 'updated project', '10.0.0.' || (i %% 250), 'curl/8', md5(i::text), '{"description":"a"}', '{"description":"b"}');
		  END LOOP;
		END $$`, from, min(from+999, n), tenant, n)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := owner.Exec(t.Context(), "ANALYZE audit_logs"); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d entries appended in %s (%.0f/s)", n, time.Since(start).Round(time.Millisecond), float64(n)/time.Since(start).Seconds())

	var resource, actor string
	if err := owner.QueryRow(t.Context(), "SELECT resource_id, actor_id::text FROM audit_logs WHERE tenant_id = $1 AND seq = $2", tenant, n/2).Scan(&resource, &actor); err != nil {
		t.Fatal(err)
	}
	actorID := uuid.MustParse(actor)
	for _, c := range []struct {
		name string
		f    store.AuditFilter
		want int
	}{
		{"one resource (of a million)", store.AuditFilter{ResourceID: resource}, 1},
		{"one actor (of a million)", store.AuditFilter{ActorID: &actorID}, 1},
		{"no filter", store.AuditFilter{}, 50},
		{"action=permission_change", store.AuditFilter{Action: "permission_change"}, 50},
		{"action + last 7 days", store.AuditFilter{Action: "delete", Since: time.Now().Add(-7 * 24 * time.Hour)}, 50},
		{"a month 30 days ago", store.AuditFilter{Since: time.Now().Add(-45 * 24 * time.Hour), Until: time.Now().Add(-30 * 24 * time.Hour)}, 50},
	} {
		var best time.Duration
		for i := range 5 {
			s := time.Now()
			rows, _, err := db.AuditLog().List(ctx, c.f, 50, "")
			if err != nil || len(rows) != c.want {
				t.Fatalf("%s: %d rows, %v", c.name, len(rows), err)
			}
			if d := time.Since(s); i == 0 || d < best {
				best = d
			}
		}
		t.Logf("first page (up to 50), %s: %s (best of 5)", c.name, best)
	}

	// Export: sample the heap while it runs.
	heap := testenv.WatchHeap()
	var rows, bytes int
	s := time.Now()
	err := server.ExportAuditCSV(ctx, db, store.AuditFilter{}, func(chunk []byte, n int) error {
		rows += n
		bytes += len(chunk)
		return nil
	})
	took := time.Since(s)
	peak, _ := heap.Stop()
	if err != nil || rows != n {
		t.Fatalf("export: %d rows, %v", rows, err)
	}
	t.Logf("export: %d rows, %.1f MB of CSV in %s (%.0f rows/s); heap in use %.1f MB before, at most %.1f MB during",
		rows, float64(bytes)/1e6, took.Round(time.Millisecond), float64(rows)/took.Seconds(),
		float64(heap.Before.HeapInuse)/1e6, float64(peak)/1e6)

	s = time.Now()
	v, err := db.AuditLog().Verify(tenancy.With(context.Background(), tenant), 10)
	if err != nil || !v.Intact() || v.Entries != int64(n) {
		t.Fatalf("verify: %+v %v", v, err)
	}
	t.Logf("verify: %d entries in %s (%.0f/s)", v.Entries, time.Since(s).Round(time.Millisecond), float64(v.Entries)/time.Since(s).Seconds())
}
