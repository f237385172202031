package billing_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/agentvoicebox/avb/billing"
	"github.com/agentvoicebox/avb/billing/lagotest"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/tenancy"
)

// With Lago behind a faulty link (slow, silent, resetting, trickling,
// refusing), a sync and a provisioning fail within their deadlines, mark
// nothing and lose nothing; once Lago is back everything arrives once.
func TestLagoFaultsAreBoundedAndLoseNothing(t *testing.T) {
	e := newEnv(t)
	lg := lagotest.New(t)
	u, _ := url.Parse(lg.URL)
	link := testenv.FaultyLink(t, "lago", u.Host)
	c := client(t, "http://"+link.Addr()) // 150 ms an attempt, 2 attempts
	ten := e.tenant(t, "pro")
	s := &billing.Syncer{DB: e.db, Lago: c, Log: quiet}
	p := &billing.Provisioner{DB: e.db, Lago: c, Plans: map[string]string{"pro": "avb_pro"}}
	for _, f := range testenv.Faults {
		t.Run(string(f), func(t *testing.T) {
			e.usage(t, ten.ID, 30, 30, 100, 100)
			link.Inject(f, 2000) // latency: 2 s, past the attempt deadline
			start := time.Now()
			rep, err := s.SyncAll(t.Context())
			took := time.Since(start)
			if err != nil || len(rep.Failed) != 1 || rep.Sent != 0 {
				t.Fatalf("sync through %s: %+v %v", f, rep, err)
			}
			if took > 2*time.Second {
				t.Fatalf("sync through %s took %s", f, took)
			}
			start = time.Now()
			if err := p.Apply(t.Context(), ten.ID); err == nil {
				t.Fatalf("provisioning through %s succeeded", f)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Fatalf("provisioning through %s took %s", f, took)
			}
			for _, r := range e.ledger(t, ten.ID) {
				if r.SyncedAt != nil {
					if _, ok := lg.Events()[r.ID.String()]; !ok {
						t.Fatalf("row %s marked while Lago was unreachable", r.ID)
					}
				}
			}
			link.Heal()
		})
	}
	if rep, err := s.SyncAll(t.Context()); err != nil || len(rep.Failed) != 0 {
		t.Fatalf("after the faults: %+v %v", rep, err)
	}
	if err := p.Apply(t.Context(), ten.ID); err != nil {
		t.Fatal(err)
	}
	lg.Lock()
	sub := lg.Subscriptions[ten.ID.String()]
	lg.Unlock()
	if sub == nil || sub["plan_code"] != "avb_pro" {
		t.Fatalf("subscription %v", sub)
	}
	checkExactlyOnce(t, lg, e.ledger(t, ten.ID), []uuid.UUID{ten.ID})
	acct, err := e.db.BillingAccount(tenancy.With(t.Context(), ten.ID))
	if err != nil || acct.PlanCode != "avb_pro" || acct.SubscriptionStatus != "active" || acct.SyncFailures != 0 {
		t.Fatalf("account %+v %v", acct, err)
	}
}
