package app_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.temporal.io/sdk/client"

	"github.com/agentvoicebox/avb/billing"
	"github.com/agentvoicebox/avb/billing/lagotest"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/store"
)

// A tenant's life at Lago, end to end on a real Temporal: created by
// AdminService it gets a customer and a subscription; a real call's usage
// (and its API calls) reaches Lago exactly once through sync_billing_usage
// and agrees with GetUsage; Lago's invoice webhook shows up in
// ListInvoices; a tier change moves the subscription, and deleting the
// tenant terminates it.
func TestUsageFlowsFromACallToLagoOnce(t *testing.T) {
	t.Parallel()
	lg := lagotest.New(t)
	temporal := testenv.Temporal(t)
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), map[string]string{
		"AVB_TEMPORAL_ADDRESS": temporal, "AVB_SESSION_WORKFLOWS": "true", "AVB_RUN_WORKER": "true",
		"AVB_LAGO_URL": lg.URL, "AVB_LAGO_API_KEY": lagotest.APIKey, "AVB_LAGO_WEBHOOK_SECRET": string(lg.HMACKey)}), issuer, owner)
	tc, err := client.Dial(client.Options{HostPort: temporal})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()

	sys := p.token("root", "", "sysadmin")
	created := wantOK(t, p.call("/avb.v1.AdminService/CreateTenant", `{"name":"Billed Co","slug":"billed","tier":"TENANT_TIER_STARTER"}`, bearer(sys)...))
	tenantID := str(created, "tenant", "id")
	waitFor(t, 20*time.Second, func() bool {
		lg.Lock()
		defer lg.Unlock()
		sub := lg.Subscriptions[tenantID]
		return lg.Customers[tenantID] != nil && sub != nil && sub["plan_code"] == "avb_starter"
	})

	admin := p.token("bill-admin", tenantID, "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_REALTIME","API_KEY_SCOPE_ADMIN"]}`, bearer(admin)...))["secret"].(string)
	voice := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))
	sessions := avbv1connect.NewSessionServiceClient(http.DefaultClient, p.base, withKey(key))
	sess, err := sessions.CreateSession(context.Background(), connect.NewRequest(&avbv1.CreateSessionRequest{Config: callConfig}))
	if err != nil {
		t.Fatal(err)
	}
	if tr := converseIn(t, voice, 20*time.Millisecond, sess.Msg.GetSession().GetId()); tr.final != ask {
		t.Fatalf("transcript %q", tr.final)
	}
	// The workflow writes the call's usage when it ends; the key's calls
	// are flushed to the ledger; then the sync sends everything.
	db := ownerDB(t, owner)
	waitFor(t, 20*time.Second, func() bool {
		var calls, sessionRows int
		_ = db.QueryRow(context.Background(), "SELECT count(*) FILTER (WHERE kind = 'api_calls'), count(*) FILTER (WHERE kind = 'session') FROM usage_ledger WHERE tenant_id = $1", tenantID).Scan(&calls, &sessionRows)
		return calls > 0 && sessionRows == 1
	})
	schedule := tc.ScheduleClient().GetHandle(context.Background(), p.cfg.Temporal.QueuePrefix+"sync_billing_usage")
	sync := func() {
		t.Helper()
		if err := schedule.Trigger(context.Background(), client.ScheduleTriggerOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sync()
	waitFor(t, 20*time.Second, func() bool {
		var pending int
		_ = db.QueryRow(context.Background(), "SELECT count(*) FROM usage_ledger WHERE tenant_id = $1 AND synced_at IS NULL", tenantID).Scan(&pending)
		return pending == 0
	})
	sync() // a second run has nothing to send
	var sessions_, minutes, apiCalls float64
	var inTok, outTok float64
	for _, ev := range lg.Events() {
		if ev.ExternalSubscriptionID != tenantID {
			continue
		}
		switch ev.Code {
		case billing.CodeSessions:
			sessions_++
		case billing.CodeAudioMinutes:
			minutes += ev.Properties["minutes"].(float64)
		case billing.CodeAPICalls:
			apiCalls += ev.Properties["calls"].(float64)
		case billing.CodeInputTokens:
			inTok += ev.Properties["tokens"].(float64)
		case billing.CodeOutputTokens:
			outTok += ev.Properties["tokens"].(float64)
		}
	}
	for id, n := range lg.Deliveries() {
		if n != 1 {
			t.Errorf("transaction %s posted %d times with no failure in between", id, n)
		}
	}
	if p := lg.Problems(); len(p) > 0 {
		t.Fatalf("requests Lago would refuse: %v", p)
	}
	usage := wantOK(t, p.call("/avb.v1.BillingService/GetUsage", "{}", bearer(admin)...))["usage"].(map[string]any)
	gotMinutes := usage["audioInputMinutes"].(float64) + usage["audioOutputMinutes"].(float64)
	if sessions_ != 1 || usage["sessions"] != "1" || math.Abs(gotMinutes-minutes) > 1e-9 || minutes <= 0 || apiCalls < 2 ||
		usage["inputTokens"] != fmtInt(inTok) || usage["outputTokens"] != fmtInt(outTok) || usage["apiCalls"] != fmtInt(apiCalls) {
		t.Fatalf("Lago got %v sessions, %v minutes, %v api calls, %v/%v tokens; GetUsage says %v", sessions_, minutes, apiCalls, inTok, outTok, usage)
	}

	// Lago issues an invoice: the webhook lands it in ListInvoices.
	wh := lg.Sign(map[string]any{"webhook_type": "invoice.created", "object_type": "invoice", "invoice": map[string]any{
		"lago_id": "1a901a90-1a90-1a90-1a90-1a901a901a90", "number": "BIL-2026-001", "issuing_date": "2026-12-01",
		"status": "finalized", "payment_status": "pending", "currency": "USD", "total_amount_cents": 2900,
		"file_url": "https://lago.example/inv.pdf", "customer": map[string]any{"external_id": tenantID}}}, "hmac", "unique-1", time.Time{})
	if status, body := lagotest.Post(t, p.base+billing.WebhookPath, wh); status != 200 || !strings.Contains(body, "applied") {
		t.Fatalf("webhook: %d %s", status, body)
	}
	invs := items(wantOK(t, p.call("/avb.v1.BillingService/ListInvoices", "{}", bearer(admin)...)), "invoices")
	if len(invs) != 1 || str(invs[0].(map[string]any), "number") != "BIL-2026-001" || str(invs[0].(map[string]any), "status") != "INVOICE_STATUS_FINALIZED" {
		t.Fatalf("invoices %v", invs)
	}
	if n := items(wantOK(t, p.call("/avb.v1.NotificationService/ListNotifications", "{}", bearer(admin)...)), "notifications"); len(n) == 0 {
		t.Fatal("the billing admin was not told of the invoice")
	}
	// An invoice whose webhook never arrived (Lago gave up) still shows:
	// ListInvoices reads Lago's newest first.
	lg.Lock()
	lg.Invoices[tenantID] = []map[string]any{{"lago_id": "2b902b90-2b90-2b90-2b90-2b902b902b90", "number": "BIL-2026-002",
		"issuing_date": "2026-12-02", "status": "finalized", "payment_status": "succeeded", "currency": "USD",
		"total_amount_cents": 4100, "file_url": "", "customer": map[string]any{"external_id": tenantID}}}
	lg.Unlock()
	invs = items(wantOK(t, p.call("/avb.v1.BillingService/ListInvoices", "{}", bearer(admin)...)), "invoices")
	if len(invs) != 2 || str(invs[0].(map[string]any), "number") != "BIL-2026-002" || str(invs[0].(map[string]any), "status") != "INVOICE_STATUS_PAID" {
		t.Fatalf("invoices after Lago issued one more %v", invs)
	}

	// A tier change moves the subscription to the new tier's plan.
	changed := wantOK(t, p.call("/avb.v1.AdminService/ChangeTenantTier", `{"tenantId":"`+tenantID+`","tier":"TENANT_TIER_PRO"}`, bearer(sys)...))
	if str(changed, "tenant", "tier") != "TENANT_TIER_PRO" {
		t.Fatalf("changed %v", changed)
	}
	waitFor(t, 20*time.Second, func() bool {
		lg.Lock()
		defer lg.Unlock()
		return lg.Subscriptions[tenantID]["plan_code"] == "avb_pro"
	})
	// The customer now names the tenant's billing contact (its first admin).
	lg.Lock()
	email := lg.Customers[tenantID]["email"]
	lg.Unlock()
	if email != "bill-admin@example.com" {
		t.Fatalf("customer email %v", email)
	}
	wantOK(t, p.call("/avb.v1.AdminService/DeleteTenant", `{"tenantId":"`+tenantID+`"}`, bearer(sys)...))
	waitFor(t, 20*time.Second, func() bool {
		lg.Lock()
		defer lg.Unlock()
		return lg.Subscriptions[tenantID]["status"] == "terminated"
	})
	// Each of them is audited: subscribed, invoice, the tier change,
	// moved, terminated (the last once Lago has answered).
	waitFor(t, 10*time.Second, func() bool {
		var audited int
		err := db.QueryRow(context.Background(), "SELECT count(*) FROM audit_logs WHERE tenant_id = $1 AND action = 'billing_event'", tenantID).Scan(&audited)
		return err == nil && audited == 5
	})
}

func fmtInt(f float64) string { return strconv.FormatInt(int64(f), 10) }

// With Lago slow, silent, resetting, trickling or refusing, ListInvoices
// still answers, from the invoices avb holds, within its refresh deadline.
func TestInvoicesListWhileLagoFails(t *testing.T) {
	t.Parallel()
	lg := lagotest.New(t)
	u, _ := url.Parse(lg.URL)
	link := testenv.FaultyLink(t, "lago", u.Host)
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), map[string]string{
		"AVB_LAGO_URL": "http://" + link.Addr(), "AVB_LAGO_API_KEY": lagotest.APIKey, "AVB_LAGO_WEBHOOK_SECRET": string(lg.HMACKey),
		"AVB_LAGO_TIMEOUT": "1s"}), issuer, owner)
	ten := p.tenant("invoices", store.TierPro)
	admin := p.token("inv-admin", ten.ID.String(), "admin")
	wh := lg.Sign(map[string]any{"webhook_type": "invoice.created", "object_type": "invoice", "invoice": map[string]any{
		"lago_id": "3c903c90-3c90-3c90-3c90-3c903c903c90", "number": "INV-1", "issuing_date": "2026-11-01",
		"status": "finalized", "payment_status": "pending", "currency": "USD", "total_amount_cents": 900,
		"customer": map[string]any{"external_id": ten.ID.String()}}}, "hmac", "inv-1", time.Time{})
	if status, body := lagotest.Post(t, p.base+billing.WebhookPath, wh); status != 200 {
		t.Fatalf("webhook: %d %s", status, body)
	}
	for _, f := range testenv.Faults {
		link.Inject(f, 10000)
		start := time.Now()
		invs := items(wantOK(t, p.call("/avb.v1.BillingService/ListInvoices", "{}", bearer(admin)...)), "invoices")
		if took := time.Since(start); took > 4*time.Second || len(invs) != 1 {
			t.Fatalf("%s: %d invoices in %s", f, len(invs), took)
		}
		link.Heal()
	}
}

// With Temporal silent or refusing, creating a tenant does not wait on its
// billing workflow; the billing sync's reconcile provisions what it missed.
func TestTenantBillingCatchesUpAfterTemporalFails(t *testing.T) {
	t.Parallel()
	lg := lagotest.New(t)
	p, l := faultPlatform(t, map[string]string{"AVB_LAGO_URL": lg.URL, "AVB_LAGO_API_KEY": lagotest.APIKey})
	sys := p.token("root", "", "sysadmin")
	var ids []string
	for i, f := range []testenv.Fault{testenv.Blackhole, testenv.Refused} {
		l.temporal.Inject(f, 0)
		r, took := p.timedCall("/avb.v1.AdminService/CreateTenant", fmt.Sprintf(`{"name":"Late %d","slug":"late-%d","tier":"TENANT_TIER_PRO"}`, i, i), bearer(sys)...)
		if r.status != http.StatusOK || took > time.Second {
			t.Fatalf("temporal %s: CreateTenant %d after %s: %s", f, r.status, took, r.raw)
		}
		ids = append(ids, str(r.body, "tenant", "id"))
		time.Sleep(time.Second) // the background start gives up meanwhile
		l.temporal.Heal()
	}
	tc, err := client.Dial(client.Options{HostPort: testenv.Temporal(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	waitFor(t, 30*time.Second, func() bool {
		_ = tc.ScheduleClient().GetHandle(context.Background(), p.cfg.Temporal.QueuePrefix+"sync_billing_usage").Trigger(context.Background(), client.ScheduleTriggerOptions{})
		time.Sleep(time.Second)
		lg.Lock()
		defer lg.Unlock()
		for _, id := range ids {
			if lg.Subscriptions[id] == nil || lg.Subscriptions[id]["plan_code"] != "avb_pro" {
				return false
			}
		}
		return true
	})
}
