package billing_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/agentvoicebox/avb/billing"
	"github.com/agentvoicebox/avb/billing/lagotest"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/secret"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

func invoicePayload(tenantID uuid.UUID, typ, lagoID, status, payment string) map[string]any {
	return map[string]any{"webhook_type": typ, "object_type": "invoice", "invoice": map[string]any{
		"lago_id": lagoID, "number": "AVB-202612-001", "issuing_date": "2026-12-01", "status": status,
		"payment_status": payment, "currency": "USD", "total_amount_cents": 12345, "file_url": "https://lago.standin/invoice.pdf",
		"customer": map[string]any{"external_id": tenantID.String()}}}
}

func webhookServer(t *testing.T, e env, lg *lagotest.Server, now func() time.Time, alerted ...func(context.Context, map[string]any)) *httptest.Server {
	h := &billing.Webhooks{DB: e.db, HMACKey: secret.New(string(lg.HMACKey)), Issuer: lg.Issuer, MaxAge: time.Hour, Now: now,
		PublicKey: client(t, lg.URL).WebhookPublicKey,
		Notify: func(ctx context.Context, n store.Notification) error {
			_, err := e.db.Notifications().NotifyBilling(ctx, n)
			return err
		}}
	if len(alerted) > 0 {
		h.Alerted = alerted[0]
	}
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func TestWebhookSignatures(t *testing.T) {
	e := newEnv(t)
	lg := lagotest.New(t)
	ten := e.tenant(t, "pro")
	now := time.Now()
	srv := webhookServer(t, e, lg, func() time.Time { return now })
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	payload := invoicePayload(ten.ID, "invoice.created", uuid.NewString(), "finalized", "pending")
	good := func(alg string) lagotest.Webhook { return lg.Sign(payload, alg, uuid.NewString(), time.Time{}) }

	cases := []struct {
		name   string
		wh     func() lagotest.Webhook
		status int
		reason string
	}{
		{"hmac", func() lagotest.Webhook { return good("hmac") }, 200, ""},
		{"jwt", func() lagotest.Webhook { return good("jwt") }, 200, ""},
		{"jwt by default", func() lagotest.Webhook {
			wh := good("jwt")
			wh.Headers.Del("X-Lago-Signature-Algorithm")
			return wh
		}, 200, ""},
		{"unsigned", func() lagotest.Webhook {
			wh := good("hmac")
			wh.Headers.Del("X-Lago-Signature")
			return wh
		}, 401, "not signed"},
		{"hmac tampered body", func() lagotest.Webhook {
			wh := good("hmac")
			wh.Body = []byte(strings.Replace(string(wh.Body), "12345", "1", 1))
			return wh
		}, 401, "does not match"},
		{"hmac wrong key", func() lagotest.Webhook {
			saved := lg.HMACKey
			lg.HMACKey = []byte("another key")
			defer func() { lg.HMACKey = saved }()
			return good("hmac")
		}, 401, "does not match"},
		{"jwt tampered body", func() lagotest.Webhook {
			wh := good("jwt")
			wh.Body = []byte(strings.Replace(string(wh.Body), "12345", "1", 1))
			return wh
		}, 401, "another body"},
		{"jwt wrong key", func() lagotest.Webhook {
			wh := good("jwt")
			wh.Headers.Set("X-Lago-Signature", lg.SignJWT(string(wh.Body), other, time.Time{}))
			return wh
		}, 401, "does not verify"},
		{"jwt none algorithm", func() lagotest.Webhook {
			wh := good("jwt")
			wh.Headers.Set("X-Lago-Signature", "eyJhbGciOiJub25lIn0.eyJkYXRhIjoie30ifQ.")
			return wh
		}, 401, "malformed"},
		{"jwt stale", func() lagotest.Webhook {
			wh := good("jwt")
			wh.Headers.Set("X-Lago-Signature", lg.SignJWT(string(wh.Body), lagoKey(t, lg), now.Add(-2*time.Hour)))
			return wh
		}, 401, "stale"},
		{"unknown algorithm", func() lagotest.Webhook {
			wh := good("hmac")
			wh.Headers.Set("X-Lago-Signature-Algorithm", "md5")
			return wh
		}, 401, "unknown signature algorithm"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := lagotest.Post(t, srv.URL, c.wh())
			if status != c.status || !strings.Contains(body, c.reason) {
				t.Fatalf("status %d %s, want %d containing %q", status, body, c.status, c.reason)
			}
			if status == 401 && !strings.Contains(body, "invalid_signature") {
				t.Fatalf("refusal without its reason: %s", body)
			}
		})
	}
}

// lagoKey signs with the stand-in's own key (by signing through Sign).
func lagoKey(t *testing.T, lg *lagotest.Server) *rsa.PrivateKey {
	t.Helper()
	return lg.PrivateKey()
}

func TestWebhookAppliesEachDeliveryOnce(t *testing.T) {
	e := newEnv(t)
	lg := lagotest.New(t)
	ten := e.tenant(t, "pro")
	var alerts atomic.Int32
	srv := webhookServer(t, e, lg, time.Now, func(ctx context.Context, a map[string]any) {
		if id, _ := tenancy.ID(ctx); id == ten.ID && a["alert_code"] == "usage_80" {
			alerts.Add(1)
		}
	})
	ctx := tenancy.With(t.Context(), ten.ID)
	lagoID := uuid.NewString()

	created := lg.Sign(invoicePayload(ten.ID, "invoice.created", lagoID, "finalized", "pending"), "hmac", "key-1", time.Time{})
	for i, want := range []string{`"applied"`, `"duplicate"`, `"duplicate"`} { // Lago retries; a replay too
		if status, body := lagotest.Post(t, srv.URL, created); status != 200 || !strings.Contains(body, want) {
			t.Fatalf("delivery %d: %d %s, want %s", i, status, body, want)
		}
	}
	invs, _, err := e.db.Invoices(ctx, 10, "")
	if err != nil || len(invs) != 1 || invs[0].Status != "finalized" || invs[0].TotalMinor != 12345 || invs[0].Number != "AVB-202612-001" {
		t.Fatalf("invoices: %+v %v", invs, err)
	}
	paid := lg.Sign(invoicePayload(ten.ID, "invoice.payment_status_updated", lagoID, "finalized", "succeeded"), "jwt", "key-2", time.Time{})
	if status, body := lagotest.Post(t, srv.URL, paid); status != 200 || !strings.Contains(body, "applied") {
		t.Fatalf("payment update: %d %s", status, body)
	}
	invs, _, _ = e.db.Invoices(ctx, 10, "")
	if len(invs) != 1 || invs[0].Status != "paid" {
		t.Fatalf("after payment: %+v", invs)
	}
	// Billing users were told once per delivery.
	var notes []store.Notification
	if err := e.owner.Bun.NewSelect().Model(&notes).Where("tenant_id = ? AND type = 'billing.invoice'", ten.ID).Order("created_at").
		Scan(t.Context()); err != nil || len(notes) != 2 || notes[0].Title != "New invoice" || notes[1].Title != "Invoice paid" {
		t.Fatalf("notifications: %+v %v", notes, err)
	}
	// One audit entry (system, billing_event) per applied delivery.
	n, err := e.owner.Bun.NewSelect().Table("audit_logs").Where("tenant_id = ? AND action = 'billing_event' AND actor_type = 'system'", ten.ID).Count(t.Context())
	if err != nil || n != 2 {
		t.Fatalf("audit entries: %d %v", n, err)
	}

	terminated := lg.Sign(map[string]any{"webhook_type": "subscription.terminated", "object_type": "subscription",
		"subscription": map[string]any{"external_id": ten.ID.String(), "external_customer_id": ten.ID.String(), "plan_code": "avb_pro", "status": "terminated"}},
		"hmac", "key-3", time.Time{})
	if status, body := lagotest.Post(t, srv.URL, terminated); status != 200 || !strings.Contains(body, "applied") {
		t.Fatalf("terminated: %d %s", status, body)
	}
	if acct, err := e.db.BillingAccount(ctx); err != nil || acct.SubscriptionStatus != "terminated" {
		t.Fatalf("account: %+v %v", acct, err)
	}
	// Lago's own alert: heard once, however often delivered.
	alert := lg.Sign(map[string]any{"webhook_type": "alert.triggered", "object_type": "triggered_alert", "triggered_alert": map[string]any{
		"external_customer_id": ten.ID.String(), "external_subscription_id": ten.ID.String(), "alert_code": "usage_80",
		"alert_name": "80% of the plan", "billable_metric_code": "audio_minutes", "current_value": "4100"}}, "jwt", "key-4", time.Time{})
	for range 2 {
		if status, body := lagotest.Post(t, srv.URL, alert); status != 200 {
			t.Fatalf("alert: %d %s", status, body)
		}
	}
	if alerts.Load() != 1 {
		t.Fatalf("Lago's alert heard %d times", alerts.Load())
	}
	// Unknown types, and customers that are no tenant, are accepted so
	// Lago stops retrying.
	for _, p := range []map[string]any{
		{"webhook_type": "credit_note.created", "object_type": "credit_note", "credit_note": map[string]any{}},
		invoicePayload(uuid.New(), "invoice.created", uuid.NewString(), "finalized", "pending"),
	} {
		if status, body := lagotest.Post(t, srv.URL, lg.Sign(p, "hmac", uuid.NewString(), time.Time{})); status != 200 || !strings.Contains(body, "ignored") {
			t.Fatalf("%v: %d %s", p["webhook_type"], status, body)
		}
	}
	if status, _ := lagotest.Post(t, srv.URL, lagotest.Webhook{Body: []byte("{"), Headers: lg.Sign(map[string]any{}, "hmac", "x", time.Time{}).Headers}); status != http.StatusUnauthorized {
		t.Fatalf("a body its signature is not of: %d", status)
	}
}

// Lago's public key is fetched with a deadline: while Lago is silent or
// refusing, a jwt-signed webhook is refused (Lago retries it) within it,
// and once Lago answers the key is fetched and the webhook accepted.
func TestWebhookPublicKeyFetchWhileLagoFails(t *testing.T) {
	e := newEnv(t)
	lg := lagotest.New(t)
	ten := e.tenant(t, "pro")
	u, _ := url.Parse(lg.URL)
	link := testenv.FaultyLink(t, "lago-key", u.Host)
	h := &billing.Webhooks{DB: e.db, PublicKey: client(t, "http://"+link.Addr()).WebhookPublicKey, Log: quiet}
	srv := httptest.NewServer(h)
	defer srv.Close()
	wh := lg.Sign(invoicePayload(ten.ID, "invoice.created", uuid.NewString(), "finalized", "pending"), "jwt", "key-pk", time.Time{})
	for _, f := range []testenv.Fault{testenv.Blackhole, testenv.Refused} {
		link.Inject(f, 0)
		start := time.Now()
		if status, body := lagotest.Post(t, srv.URL, wh); status != http.StatusUnauthorized || !strings.Contains(body, "public key") || time.Since(start) > 2*time.Second {
			t.Fatalf("lago %s: %d %s after %s", f, status, body, time.Since(start))
		}
		link.Heal()
	}
	if status, body := lagotest.Post(t, srv.URL, wh); status != 200 || !strings.Contains(body, "applied") {
		t.Fatalf("once Lago answers: %d %s", status, body)
	}
}
