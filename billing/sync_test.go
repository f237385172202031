package billing_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/billing"
	"github.com/agentvoicebox/avb/billing/lago"
	"github.com/agentvoicebox/avb/billing/lagotest"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var quiet = slog.New(slog.DiscardHandler)

// tb is what the helpers need of a *testing.T or a *rapid.T.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// env is a migrated database opened as avb_app, and as its owner for
// looking past row-level security.
type env struct {
	db, owner *store.DB
}

func newEnv(t testing.TB) env {
	t.Helper()
	db, ownerURL := testenv.AppDB(t)
	owner, err := store.Open(t.Context(), config.Database{URL: ownerURL, MaxConns: 4, ConnectTimeout: 5 * time.Second,
		MaxConnLifetime: time.Hour, MaxConnIdleTime: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(owner.Close)
	return env{db, owner}
}

func (e env) tenant(t testing.TB, tier string) *store.Tenant {
	t.Helper()
	ten := &store.Tenant{Name: "Acme " + uuid.NewString()[:8], Slug: "acme-" + uuid.NewString()[:8], Tier: tier}
	if err := e.db.Tenants().Create(context.Background(), ten); err != nil {
		t.Fatal(err)
	}
	return ten
}

// usage writes one session of the tenant and its ledger rows.
func (e env) usage(t tb, tenantID uuid.UUID, audioIn, audioOut float64, in, out int) uuid.UUID {
	t.Helper()
	ctx := tenancy.With(context.Background(), tenantID)
	s := &store.Session{}
	if err := e.db.Sessions().Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := e.db.Sessions().RecordUsage(ctx, []store.UsageEntry{{SessionID: s.ID, Kind: "session", Quantity: 1},
		{SessionID: s.ID, Kind: "audio_in_seconds", Quantity: audioIn}, {SessionID: s.ID, Kind: "audio_out_seconds", Quantity: audioOut},
		{SessionID: s.ID, Kind: "input_tokens", Quantity: float64(in)}, {SessionID: s.ID, Kind: "output_tokens", Quantity: float64(out)}}); err != nil {
		t.Fatal(err)
	}
	return s.ID
}

// ledger reads the tenants' ledger rows past row-level security.
func (e env) ledger(t tb, tenants ...uuid.UUID) []store.UsageEntry {
	t.Helper()
	var rows []store.UsageEntry
	if err := e.owner.Bun.NewSelect().Model(&rows).Where("tenant_id IN (?)", bun.In(tenants)).Order("recorded_at", "id").
		Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	return rows
}

func client(t testing.TB, url string) *lago.Client {
	c, err := lago.New(url, lagotest.APIKey, &http.Client{})
	if err != nil {
		t.Fatal(err)
	}
	c.AttemptTimeout, c.MaxAttempts, c.BaseDelay, c.MaxDelay = 150*time.Millisecond, 2, time.Millisecond, 5*time.Millisecond
	return c
}

// checkExactlyOnce asserts Lago holds one event per billable ledger row, with
// the row's content, and nothing else of these tenants.
func checkExactlyOnce(t tb, lg *lagotest.Server, rows []store.UsageEntry, tenants []uuid.UUID) {
	t.Helper()
	events := lg.Events()
	subs := map[string]bool{}
	for _, id := range tenants {
		subs[billing.SubscriptionID(id)] = true
	}
	want := map[string]bool{}
	for _, r := range rows {
		ev, ok := billing.EventOf(r)
		if !ok {
			continue
		}
		want[ev.TransactionID] = true
		got, ok := events[ev.TransactionID]
		if !ok {
			t.Fatalf("ledger row %s (%s %v) never reached Lago", r.ID, r.Kind, r.Quantity)
		}
		a, _ := json.Marshal(ev)
		b, _ := json.Marshal(got)
		var x, y map[string]any
		_ = json.Unmarshal(a, &x)
		_ = json.Unmarshal(b, &y)
		if fmt.Sprint(x) != fmt.Sprint(y) {
			t.Fatalf("Lago holds %s for row %s, want %s", b, r.ID, a)
		}
	}
	for id, ev := range events {
		if subs[ev.ExternalSubscriptionID] && !want[id] {
			t.Fatalf("Lago holds event %s that no ledger row bills", id)
		}
	}
	if p := lg.Problems(); len(p) > 0 {
		t.Fatalf("requests Lago would refuse: %v", p)
	}
}

func TestSyncSendsEveryRowOnceAndMarksIt(t *testing.T) {
	e := newEnv(t)
	lg := lagotest.New(t)
	a, b := e.tenant(t, "pro"), e.tenant(t, "starter")
	for i := range 130 { // more than one batch of 100
		e.usage(t, a.ID, float64(i), 2, i, 3)
	}
	e.usage(t, b.ID, 0, 0, 0, 0) // only its session is billable
	s := &billing.Syncer{DB: e.db, Lago: client(t, lg.URL)}
	rep, err := s.SyncAll(t.Context())
	if err != nil || len(rep.Failed) != 0 {
		t.Fatalf("sync: %+v %v", rep, err)
	}
	rows := e.ledger(t, a.ID, b.ID)
	billable := 0
	for _, r := range rows {
		if r.SyncedAt == nil {
			t.Fatalf("row %s not marked", r.ID)
		}
		if _, ok := billing.EventOf(r); ok {
			billable++
		}
	}
	if rep.Sent != billable {
		t.Fatalf("sent %d events, want %d", rep.Sent, billable)
	}
	checkExactlyOnce(t, lg, rows, []uuid.UUID{a.ID, b.ID})
	// Nothing is left: the next run sends nothing.
	calls := len(lg.Calls())
	if rep, err := s.SyncAll(t.Context()); err != nil || rep.Sent != 0 || len(lg.Calls()) != calls {
		t.Fatalf("second run: %+v %v (calls %d -> %d)", rep, err, calls, len(lg.Calls()))
	}
}

func TestOneTenantsFailingSyncDoesNotStopTheOthers(t *testing.T) {
	e := newEnv(t)
	lg := lagotest.New(t)
	a, b := e.tenant(t, "pro"), e.tenant(t, "pro")
	e.usage(t, a.ID, 60, 60, 10, 10)
	e.usage(t, b.ID, 60, 60, 10, 10)
	var told []string
	var mu sync.Mutex
	s := &billing.Syncer{DB: e.db, Lago: client(t, lg.URL), Log: quiet, FailingAfter: 2,
		Notify: func(ctx context.Context, n store.Notification) error {
			id, _ := tenancy.ID(ctx)
			mu.Lock()
			told = append(told, id.String()+" "+n.Type)
			mu.Unlock()
			return nil
		}}
	for run := 1; run <= 2; run++ {
		lg.Fail(1, lagotest.Status, http.StatusUnprocessableEntity) // the first tenant synced is refused
		rep, err := s.SyncAll(t.Context())
		if err != nil || len(rep.Failed) != 1 || rep.Sent != 5 {
			t.Fatalf("run %d: %+v %v", run, rep, err)
		}
		if want := run - 1; rep.Failing != want {
			t.Fatalf("run %d: %d failing, want %d", run, rep.Failing, want)
		}
		// Make another row for the failed tenant so the next run has both again.
		e.usage(t, rep.Failed[0], 1, 1, 1, 1)
		if rep.Failed[0] == a.ID {
			e.usage(t, b.ID, 1, 1, 1, 1)
		} else {
			e.usage(t, a.ID, 1, 1, 1, 1)
		}
	}
	if len(told) == 0 {
		t.Fatal("billing users were not told of a tenant whose sync keeps failing")
	}
	if rep, err := s.SyncAll(t.Context()); err != nil || len(rep.Failed) != 0 {
		t.Fatalf("healed: %+v %v", rep, err)
	}
	checkExactlyOnce(t, lg, e.ledger(t, a.ID, b.ID), []uuid.UUID{a.ID, b.ID})
	acct, err := e.db.BillingAccount(tenancy.With(t.Context(), a.ID))
	if err != nil || acct.SyncFailures != 0 || acct.LastSyncedAt == nil {
		t.Fatalf("account after a good sync: %+v %v", acct, err)
	}
}

// Property: whatever Lago answers (429, 5xx, silence, accepted-then-500),
// however syncs crash between send and mark or run twice at once, every
// ledger row reaches Lago exactly once by transaction id, and no row is
// marked before Lago has it.
func TestPropertyUsageReachesLagoExactlyOnce(t *testing.T) {
	e := newEnv(t)
	rapid.Check(t, func(rt *rapid.T) {
		lg := lagotest.New(t)
		tenants := []uuid.UUID{e.tenant(t, "pro").ID, e.tenant(t, "starter").ID}
		var crash atomic.Bool
		s := &billing.Syncer{DB: e.db, Lago: client(t, lg.URL), Log: quiet, PageRows: rapid.IntRange(1, 250).Draw(rt, "page")}
		s.CrashAfterSend(func() bool { return crash.Swap(false) })
		runSync := func(ctx context.Context) {
			_, _ = s.SyncAll(ctx)
			// Never marked before Lago has it.
			events := lg.Events()
			for _, r := range e.ledger(rt, tenants...) {
				if ev, ok := billing.EventOf(r); ok && r.SyncedAt != nil {
					if _, have := events[ev.TransactionID]; !have {
						rt.Fatalf("row %s marked synced but Lago never accepted it", r.ID)
					}
				}
			}
		}
		rt.Repeat(map[string]func(*rapid.T){
			"write": func(rt *rapid.T) {
				n := rapid.IntRange(1, 15).Draw(rt, "sessions")
				for range n {
					e.usage(rt, tenants[rapid.IntRange(0, 1).Draw(rt, "tenant")], float64(rapid.IntRange(0, 600).Draw(rt, "in")),
						float64(rapid.IntRange(0, 600).Draw(rt, "out")), rapid.IntRange(0, 5000).Draw(rt, "tin"), rapid.IntRange(0, 5000).Draw(rt, "tout"))
				}
			},
			"sync": func(rt *rapid.T) { runSync(context.Background()) },
			"lago fails": func(rt *rapid.T) {
				kind := rapid.SampledFrom([]lagotest.Fault{lagotest.Status, lagotest.AcceptThenFail, lagotest.Hang}).Draw(rt, "fault")
				lg.Fail(rapid.IntRange(1, 4).Draw(rt, "times"), kind, rapid.SampledFrom([]int{429, 500, 502, 503}).Draw(rt, "status"))
			},
			"crash between send and mark": func(rt *rapid.T) {
				crash.Store(true)
				runSync(context.Background())
				crash.Store(false)
			},
			"duplicate delivery": func(rt *rapid.T) {
				var wg sync.WaitGroup
				for range 2 {
					wg.Go(func() { _, _ = s.SyncAll(context.Background()) })
				}
				wg.Wait()
			},
		})
		lg.Heal()
		if _, err := s.SyncAll(context.Background()); err != nil {
			rt.Fatal(err)
		}
		rows := e.ledger(rt, tenants...)
		for _, r := range rows {
			if r.SyncedAt == nil {
				rt.Fatalf("row %s still unsent after a healthy sync", r.ID)
			}
		}
		checkExactlyOnce(rt, lg, rows, tenants)
	})
}
