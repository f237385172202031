package billing

import (
	"context"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/agentvoicebox/avb/billing/lago"
	"github.com/agentvoicebox/avb/platform/secret"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

// WebhookPath is where Lago posts its webhooks.
const WebhookPath = "/webhooks/lago"

// maxWebhookBody bounds a webhook's body.
const maxWebhookBody = 1 << 20

// Webhooks receives Lago's webhooks: it checks each signature, applies
// each delivery once (by X-Lago-Unique-Key), and answers 2xx to anything
// it understood or chose to ignore, so Lago stops retrying.
type Webhooks struct {
	DB *store.DB
	// HMACKey verifies hmac signatures (empty: hmac is refused); after a
	// rotation the replaced key verifies too for its grace period.
	HMACKey *secret.Value
	// PublicKey fetches Lago's jwt signing key; it is called once and the
	// key kept (nil: jwt is refused).
	PublicKey func(ctx context.Context) (*rsa.PublicKey, error)
	// Issuer, when set, must be the jwt's iss (Lago's API URL).
	Issuer string
	// MaxAge refuses a jwt whose iat (or exp) says it is older (zero: 24 h).
	MaxAge time.Duration
	// Notify tells the tenant in ctx's billing users.
	Notify func(ctx context.Context, n store.Notification) error
	// Alerted, when set, hears a Lago alert for the tenant in ctx.
	Alerted func(ctx context.Context, data map[string]any)
	// Observe, when set, hears each delivery's outcome: applied,
	// duplicate, ignored, refused or failed.
	Observe func(outcome string)
	Log     *slog.Logger
	Now     func() time.Time

	keyMu sync.Mutex
	key   *rsa.PublicKey
}

// webhookError is a refusal, as JSON in Connect's error shape.
func webhookError(w http.ResponseWriter, status int, code, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg,
		"details": []map[string]any{{"reason": reason, "domain": "agentvoicebox.dev"}}})
}

func (h *Webhooks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		webhookError(w, http.StatusMethodNotAllowed, "unimplemented", "method_not_allowed", "webhooks are POSTed")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
	if err != nil {
		webhookError(w, http.StatusRequestEntityTooLarge, "resource_exhausted", "payload_too_large", "a webhook body holds at most 1 MiB")
		return
	}
	if err := h.verify(r.Context(), r.Header, body); err != nil {
		h.observe("refused")
		h.log().WarnContext(r.Context(), "lago webhook refused", "error", err.Error(), "unique_key", r.Header.Get("X-Lago-Unique-Key"))
		webhookError(w, http.StatusUnauthorized, "unauthenticated", "invalid_signature", err.Error())
		return
	}
	key := r.Header.Get("X-Lago-Unique-Key")
	if key == "" { // older Lago versions: the body itself identifies a delivery
		sum := sha256.Sum256(body)
		key = "sha256:" + base64.RawURLEncoding.EncodeToString(sum[:])
	}
	outcome, err := h.handle(r.Context(), key, body)
	if err != nil {
		var bad badPayload
		if errors.As(err, &bad) {
			h.observe("refused")
			webhookError(w, http.StatusBadRequest, "invalid_argument", "invalid_payload", bad.Error())
			return
		}
		h.observe("failed")
		h.log().ErrorContext(r.Context(), "lago webhook not applied; Lago will retry", "error", err.Error(), "unique_key", key)
		webhookError(w, http.StatusServiceUnavailable, "unavailable", "dependency_unavailable", "the webhook could not be applied now; retry later")
		return
	}
	h.observe(outcome)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"status": outcome})
}

func (h *Webhooks) observe(outcome string) {
	if h.Observe != nil {
		h.Observe(outcome)
	}
}

type badPayload struct{ error }

// verify checks the signature the algorithm header names (jwt when it
// names none, as Lago's default).
func (h *Webhooks) verify(ctx context.Context, hdr http.Header, body []byte) error {
	sig := hdr.Get("X-Lago-Signature")
	if sig == "" {
		return errors.New("the webhook is not signed (no X-Lago-Signature)")
	}
	switch alg := hdr.Get("X-Lago-Signature-Algorithm"); alg {
	case "hmac":
		keys := h.HMACKey.Valid()
		if len(keys) == 0 {
			return errors.New("hmac signatures are not accepted: no webhook secret is configured")
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err != nil {
			return errors.New("the hmac signature is not base64")
		}
		for _, k := range keys {
			mac := hmac.New(sha256.New, []byte(k))
			mac.Write(body)
			if hmac.Equal(got, mac.Sum(nil)) {
				return nil
			}
		}
		return errors.New("the hmac signature does not match the body")
	case "", "jwt":
		return h.verifyJWT(ctx, sig, body)
	default:
		return errors.New("unknown signature algorithm " + alg)
	}
}

func (h *Webhooks) verifyJWT(ctx context.Context, sig string, body []byte) error {
	key, err := h.publicKey(ctx)
	if err != nil {
		return err
	}
	tok, err := josejwt.ParseSigned(sig, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return errors.New("the jwt signature is malformed")
	}
	var claims struct {
		josejwt.Claims
		Data string `json:"data"`
	}
	if err := tok.Claims(key, &claims); err != nil {
		return errors.New("the jwt signature does not verify with Lago's key")
	}
	if claims.Data != string(body) {
		return errors.New("the jwt signature is of another body")
	}
	if h.Issuer != "" && claims.Issuer != h.Issuer {
		return errors.New("the jwt is from another issuer")
	}
	now := h.now()
	maxAge := h.MaxAge
	if maxAge <= 0 {
		maxAge = 24 * time.Hour
	}
	if claims.Expiry != nil && now.After(claims.Expiry.Time()) {
		return errors.New("the webhook is stale: its signature expired")
	}
	if claims.IssuedAt != nil && now.Sub(claims.IssuedAt.Time()) > maxAge {
		return errors.New("the webhook is stale: signed more than " + maxAge.String() + " ago")
	}
	return nil
}

// publicKey is Lago's key, fetched the first time one is needed.
func (h *Webhooks) publicKey(ctx context.Context) (*rsa.PublicKey, error) {
	h.keyMu.Lock()
	defer h.keyMu.Unlock()
	if h.key != nil {
		return h.key, nil
	}
	if h.PublicKey == nil {
		return nil, errors.New("jwt signatures are not accepted: Lago is not configured")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	k, err := h.PublicKey(ctx)
	if err != nil {
		return nil, errors.New("Lago's public key could not be fetched")
	}
	h.key = k
	return k, nil
}

// webhook is Lago's envelope; the object sits under the key object_type names.
type webhook struct {
	Type       string          `json:"webhook_type"`
	ObjectType string          `json:"object_type"`
	Invoice    *lago.Invoice   `json:"invoice"`
	Sub        *lagoSubEvent   `json:"subscription"`
	Alert      json.RawMessage `json:"triggered_alert"`
}

type lagoSubEvent struct {
	ExternalID         string `json:"external_id"`
	ExternalCustomerID string `json:"external_customer_id"`
	PlanCode           string `json:"plan_code"`
	Status             string `json:"status"`
}

// handle applies one delivery and says what came of it: applied,
// duplicate or ignored.
func (h *Webhooks) handle(ctx context.Context, key string, body []byte) (string, error) {
	var m webhook
	if err := json.Unmarshal(body, &m); err != nil {
		return "", badPayload{errors.New("the body is not a Lago webhook: " + err.Error())}
	}
	log := h.log().With("webhook_type", m.Type, "unique_key", key)
	var customer string
	var apply func(ctx context.Context, tx bun.Tx) error
	var after func(ctx context.Context) // once the delivery is applied (not for duplicates)
	var note *store.Notification
	switch {
	case (m.Type == "invoice.created" || m.Type == "invoice.payment_status_updated" || m.Type == "invoice.generated" ||
		m.Type == "invoice.voided" || m.Type == "invoice.payment_failure") && m.Invoice != nil && m.Invoice.Customer != nil:
		inv := m.Invoice
		customer = inv.Customer.ExternalID
		row, err := invoiceRow(inv)
		if err != nil {
			return "", badPayload{err}
		}
		apply = func(ctx context.Context, tx bun.Tx) error { return store.UpsertInvoiceTx(ctx, tx, row) }
		note = invoiceNotification(m.Type, inv, row)
	case m.Type == "subscription.terminated" && m.Sub != nil:
		customer = m.Sub.ExternalCustomerID
		apply = func(ctx context.Context, tx bun.Tx) error {
			return store.SetBillingSubscriptionTx(ctx, tx, "terminated")
		}
		note = &store.Notification{Type: "billing.subscription_terminated", Severity: "warning",
			Title: "Subscription terminated", Body: "The billing subscription on plan " + m.Sub.PlanCode + " was terminated."}
	case m.Type == "alert.triggered" && len(m.Alert) > 0:
		var a map[string]any
		if err := json.Unmarshal(m.Alert, &a); err != nil {
			return "", badPayload{err}
		}
		customer, _ = a["external_customer_id"].(string)
		name, _ := a["alert_name"].(string)
		metric, _ := a["billable_metric_code"].(string)
		note = &store.Notification{Type: "billing.alert", Severity: "warning", Title: "Billing alert: " + name,
			Body: "Lago's alert " + name + " on " + metric + " was triggered.", Data: m.Alert}
		if h.Alerted != nil {
			alerted := h.Alerted
			after = func(ctx context.Context) { alerted(ctx, a) }
		}
	default:
		log.Info("lago webhook of a type avb does not act on: accepted")
		return "ignored", nil
	}
	tenantID, err := uuid.Parse(customer)
	if err != nil {
		log.Warn("lago webhook for a customer that is not an avb tenant: accepted", "customer", customer)
		return "ignored", nil
	}
	if _, err := h.DB.Tenants().Get(ctx, tenantID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			log.Warn("lago webhook for an unknown tenant: accepted", "customer", customer)
			return "ignored", nil
		}
		return "", err
	}
	ctx = tenancy.With(ctx, tenantID)
	ctx, _ = store.WithAudit(ctx, store.AuditEntry{ActorType: "system", Action: "billing_event", ResourceType: "tenant",
		ResourceID: tenantID.String(), Description: "Lago " + m.Type})
	outcome := "applied"
	if err := h.DB.HandleWebhookOnce(ctx, key, m.Type, apply); err != nil {
		if !errors.Is(err, store.ErrDuplicateWebhook) {
			return "", err
		}
		outcome = "duplicate"
	}
	if outcome == "applied" && after != nil {
		after(ctx)
	}
	// The notification's dedupe key is the delivery's: a retry after a
	// failed notify writes it then, never twice.
	if note != nil && h.Notify != nil {
		dk := "lago:" + key
		note.DedupeKey = &dk
		if err := h.Notify(ctx, *note); err != nil {
			return "", err
		}
	}
	log.Info("lago webhook handled", "tenant_id", tenantID.String(), "outcome", outcome)
	return outcome, nil
}

// invoiceRow is Lago's invoice as avb keeps it.
func invoiceRow(inv *lago.Invoice) (*store.Invoice, error) {
	issued, err := inv.Issued()
	if err != nil {
		return nil, errors.New("invoice issuing_date is not a date: " + inv.IssuingDate)
	}
	status := "draft"
	switch {
	case inv.Status == "voided":
		status = "voided"
	case inv.Status == "finalized" && inv.PaymentStatus == "succeeded":
		status = "paid"
	case inv.Status == "finalized":
		status = "finalized"
	}
	return &store.Invoice{ProviderID: inv.LagoID, Number: inv.Number, Status: status, IssuedAt: issued,
		Currency: inv.Currency, TotalMinor: inv.TotalAmountCents, FileURL: inv.FileURL}, nil
}

func invoiceNotification(typ string, inv *lago.Invoice, row *store.Invoice) *store.Notification {
	data, _ := json.Marshal(map[string]any{"invoice_number": inv.Number, "status": row.Status,
		"payment_status": inv.PaymentStatus, "total_minor": inv.TotalAmountCents, "currency": inv.Currency})
	n := &store.Notification{Type: "billing.invoice", Severity: "info", Data: data}
	amount := money(inv.TotalAmountCents, inv.Currency)
	switch {
	case typ == "invoice.payment_failure" || inv.PaymentStatus == "failed":
		n.Severity, n.Title, n.Body = "error", "Invoice payment failed", "The payment of invoice "+inv.Number+" ("+amount+") failed."
	case inv.PaymentStatus == "succeeded":
		n.Title, n.Body = "Invoice paid", "Invoice "+inv.Number+" ("+amount+") is paid."
	case typ == "invoice.voided":
		n.Title, n.Body = "Invoice voided", "Invoice "+inv.Number+" was voided."
	default:
		n.Title, n.Body = "New invoice", "Invoice "+inv.Number+" ("+amount+") was issued."
	}
	return n
}

func money(cents int64, currency string) string {
	return trim(float64(cents)/100) + " " + currency
}

func (h *Webhooks) now() time.Time {
	if h.Now == nil {
		return time.Now()
	}
	return h.Now()
}

func (h *Webhooks) log() *slog.Logger {
	if h.Log == nil {
		return slog.Default()
	}
	return h.Log
}

// RefreshInvoices copies the newest perPage invoices Lago holds for the
// tenant in ctx into the invoices ListInvoices reads (a webhook Lago gave
// up on still shows up).
func RefreshInvoices(ctx context.Context, db *store.DB, c *lago.Client, perPage int) error {
	tenantID, ok := tenancy.ID(ctx)
	if !ok {
		return store.ErrNoTenant
	}
	page, err := c.ListInvoices(ctx, tenantID.String(), 1, perPage)
	if err != nil {
		return err
	}
	for i := range page.Invoices {
		row, err := invoiceRow(&page.Invoices[i])
		if err != nil {
			return err
		}
		if err := db.UpsertInvoice(ctx, row); err != nil {
			return err
		}
	}
	return nil
}
