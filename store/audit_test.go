package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

// ownerPool opens the database of db's tests as the owner (a superuser
// here): what a tamperer with full access to the database could do.
func ownerDB(t *testing.T) (*store.DB, *pgxpool.Pool) {
	t.Helper()
	db, owner := testenv.AppDB(t)
	odb, err := store.Open(t.Context(), config.Database{URL: owner, MaxConns: 2, ConnectTimeout: 5 * time.Second, MaxConnLifetime: time.Hour, MaxConnIdleTime: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(odb.Close)
	return db, odb.Pool
}

func appendN(t *testing.T, db *store.DB, ctx context.Context, n int) []store.AuditEntry {
	t.Helper()
	var out []store.AuditEntry
	for i := range n {
		e := store.AuditEntry{ActorType: "system", Action: "update", ResourceType: "project",
			ResourceID: uuid.NewString(), Description: "entry " + string(rune('a'+i)), NewValues: json.RawMessage(`{"n":1}`)}
		if err := db.AuditLog().Append(ctx, &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func verify(t *testing.T, db *store.DB, ctx context.Context) store.AuditVerification {
	t.Helper()
	v, err := db.AuditLog().Verify(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// The chain verifies as written, and each kind of tampering a superuser
// can do with the trigger disabled is named where it happened.
func TestAuditChainNamesEachTampering(t *testing.T) {
	t.Parallel()
	db, owner := ownerDB(t)
	ctx := newTenant(t, db, store.TierPro)
	other := newTenant(t, db, store.TierPro)
	entries := appendN(t, db, ctx, 8)
	appendN(t, db, other, 3)
	if v := verify(t, db, ctx); !v.Intact() || v.Entries != 8 || v.Head != 8 {
		t.Fatalf("a fresh chain: %+v", v)
	}
	if entries[0].Seq != 1 || entries[7].Seq != 8 {
		t.Fatalf("sequence %d..%d, want 1..8", entries[0].Seq, entries[7].Seq)
	}
	tamper := func(sql string, args ...any) {
		t.Helper()
		tx, err := owner.Begin(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(t.Context()) }()
		for i, s := range []string{"ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_immutable", sql,
			"ALTER TABLE audit_logs ENABLE TRIGGER audit_logs_immutable"} {
			var a []any
			if i == 1 {
				a = args
			}
			if _, err := tx.Exec(t.Context(), s, a...); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		if err := tx.Commit(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	// Even the owner cannot change or remove an entry while the trigger stands.
	for _, stmt := range []string{"UPDATE audit_logs SET action = 'forged'", "DELETE FROM audit_logs", "TRUNCATE audit_logs"} {
		if _, err := owner.Exec(t.Context(), stmt); err == nil || !strings.Contains(err.Error(), "cannot be changed") {
			t.Fatalf("%s as the owner: %v", stmt, err)
		}
	}
	tenant, _ := tenancy.ID(ctx)
	tamper("UPDATE audit_logs SET description = 'nothing happened' WHERE id = $1", entries[1].ID)
	tamper("DELETE FROM audit_logs WHERE id = $1", entries[3].ID)
	tamper("UPDATE audit_logs SET seq = CASE seq WHEN 6 THEN 7 ELSE 6 END WHERE tenant_id = $1 AND seq IN (6, 7)", tenant)
	v := verify(t, db, ctx)
	var got []string
	for _, b := range v.Breaks {
		got = append(got, b.Reason)
	}
	want := []string{"entry 2 does not match", "entries 4 to 4 are missing", "entry 6 does not match", "entry 7 does not match",
		"entry 8 does not match"} // two swapped: three links no longer hold
	if len(got) != len(want) {
		t.Fatalf("breaks %q, want %d of them", got, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Fatalf("break %d is %q, want %q...", i, got[i], want[i])
		}
	}
	if v.Breaks[0].EntryID != entries[1].ID {
		t.Fatalf("the changed entry is named %s, want %s", v.Breaks[0].EntryID, entries[1].ID)
	}
	if v := verify(t, db, other); !v.Intact() {
		t.Fatalf("another tenant's chain is unaffected: %+v", v)
	}
	// Removing the newest entry is seen against the chain's head.
	tamper("DELETE FROM audit_logs WHERE tenant_id = $1 AND seq = 3", mustID(other))
	if v := verify(t, db, other); len(v.Breaks) != 1 || !strings.HasPrefix(v.Breaks[0].Reason, "entries 3 to 3 are missing (the chain's head is 3)") {
		t.Fatalf("the last entry removed: %+v", v.Breaks)
	}
}

func mustID(ctx context.Context) uuid.UUID {
	id, _ := tenancy.ID(ctx)
	return id
}

// Retention drops whole months and records the cut, so the chain still
// verifies; a month dropped behind the schedule's back is detected.
func TestAuditRetentionCutsTheChainWhereItDropped(t *testing.T) {
	t.Parallel()
	db, owner := ownerDB(t)
	ctx := newTenant(t, db, store.TierPro)
	tenant := mustID(ctx)
	// Entries from 8, 5 and 4 months ago, then today's.
	if _, err := owner.Exec(t.Context(), "SELECT audit_ensure_partitions(now() - interval '9 months', 3)"); err != nil {
		t.Fatal(err)
	}
	for _, ago := range []int{8, 8, 5, 4} {
		if _, err := owner.Exec(t.Context(), `SELECT audit_chain_insert($1, now() - make_interval(months => $2), 'system', NULL, '',
			'delete', 'session', '', 'cleanup', '', '', '', '{}', '{}')`, tenant, ago); err != nil {
			t.Fatal(err)
		}
	}
	appendN(t, db, ctx, 2)
	if v := verify(t, db, ctx); !v.Intact() || v.Entries != 6 {
		t.Fatalf("before retention: %+v", v)
	}
	// A tenant that keeps its log 300 days holds every month back.
	if _, err := owner.Exec(t.Context(), `UPDATE tenants SET settings = '{"security":{"auditRetentionDays":300}}' WHERE id = $1`, tenant); err != nil {
		t.Fatal(err)
	}
	if dropped, err := db.RetainAuditLog(t.Context(), 90, 365); err != nil || dropped != 0 {
		t.Fatalf("with a 300-day tenant: %d dropped, %v", dropped, err)
	}
	// Capped by the platform's maximum, and back to the default: months go.
	if _, err := owner.Exec(t.Context(), `UPDATE tenants SET settings = '{}' WHERE id = $1`, tenant); err != nil {
		t.Fatal(err)
	}
	dropped, err := db.RetainAuditLog(t.Context(), 90, 365)
	if err != nil {
		t.Fatal(err)
	}
	if dropped < 3 { // the months of 8, 5 and 4 months ago (and empty ones between)
		t.Fatalf("%d partitions dropped", dropped)
	}
	v := verify(t, db, ctx)
	if !v.Intact() || v.Entries != 2 || v.CutSeq != 4 {
		t.Fatalf("after retention: %+v", v)
	}
	// A longer retention keeps months: with 365 days, nothing more goes.
	// Drop this month's partition by hand: the cut does not cover it.
	var part string
	if err := owner.QueryRow(t.Context(), "SELECT 'audit_logs_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMM')").Scan(&part); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Exec(t.Context(), "DROP TABLE "+part); err != nil {
		t.Fatal(err)
	}
	v = verify(t, db, ctx)
	if len(v.Breaks) != 1 || !strings.HasPrefix(v.Breaks[0].Reason, "entries 5 to 6 are missing") {
		t.Fatalf("a partition dropped outside retention: %+v", v.Breaks)
	}
}

// A request's entry commits with its change, once, and never without it.
func TestAuditEntryCommitsWithItsChangeOnly(t *testing.T) {
	t.Parallel()
	db := migratedApp(t)
	ctx := newTenant(t, db, store.TierPro)
	projects := db.Resources(store.Projects)
	count := func() int {
		v := verify(t, db, ctx)
		if !v.Intact() {
			t.Fatalf("chain: %+v", v)
		}
		return int(v.Entries)
	}
	// A read records nothing; the create records one entry with the new id.
	rctx, a := store.WithAudit(ctx, store.AuditEntry{ActorType: "system", Action: "create", ResourceType: "project"})
	if _, _, err := projects.List(rctx, store.ResourceQuery{}); err != nil {
		t.Fatal(err)
	}
	p := &store.Resource{Name: "alpha", Spec: json.RawMessage(`{"description":"x"}`)}
	if _, err := projects.Create(rctx, p); err != nil {
		t.Fatal(err)
	}
	if !a.Recorded() || count() != 1 || a.Entry().ResourceID != p.ID.String() {
		t.Fatalf("create: recorded %v, %d entries, resource %q", a.Recorded(), count(), a.Entry().ResourceID)
	}
	// A second transaction of the same request does not record again.
	if _, err := projects.Create(rctx, &store.Resource{Name: "beta"}); err != nil {
		t.Fatal(err)
	}
	if count() != 1 {
		t.Fatalf("%d entries after a second write of one request", count())
	}
	// A create that fails (the name is taken) rolls back and records nothing.
	fctx, f := store.WithAudit(ctx, store.AuditEntry{ActorType: "system", Action: "create", ResourceType: "project"})
	if _, err := projects.Create(fctx, &store.Resource{Name: "alpha"}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	if f.Recorded() || count() != 1 {
		t.Fatalf("a failed create recorded: %v, %d entries", f.Recorded(), count())
	}
	// An update records only the fields it changed.
	uctx, u := store.WithAudit(ctx, store.AuditEntry{ActorType: "system", Action: "update", ResourceType: "project"})
	if _, err := projects.Update(uctx, p.ID, func(r *store.Resource) error {
		r.Spec = json.RawMessage(`{"description":"y"}`)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e := u.Entry()
	if !u.Recorded() || string(e.OldValues) != `{"description":"x"}` || string(e.NewValues) != `{"description":"y"}` {
		t.Fatalf("update entry: %v old %s new %s", u.Recorded(), e.OldValues, e.NewValues)
	}
}
