package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/agentvoicebox/avb/billing"
	"github.com/agentvoicebox/avb/billing/lago"
	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/platform/dependency"
	"github.com/agentvoicebox/avb/platform/events"
	"github.com/agentvoicebox/avb/platform/metrics"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
	"github.com/agentvoicebox/avb/workflows"
)

// Billing is the platform's billing as its configuration sets it up: the
// quotas and alerts always, and with AVB_LAGO_URL the Lago client, the
// usage sync, the account provisioning and the webhook receiver.
type Billing struct {
	Lago       *lago.Client // nil without AVB_LAGO_URL
	Quotas     *billing.Quotas
	Activities *workflows.Billing
	Webhooks   *billing.Webhooks
}

// NewBilling builds the billing of cfg. m may be nil.
func NewBilling(cfg config.Billing, secrets *Secrets, db *store.DB, deps *dependency.Set, redisHub events.Hub, m *metrics.Metrics, log *slog.Logger) (*Billing, error) {
	notifier := &events.Notifier{DB: db, Hub: redisHub}
	// publishAlert puts a billing.alert on the tenant's stream (best effort:
	// the notifications are stored already).
	publishAlert := func(ctx context.Context, tenantID string, data map[string]any) {
		if redisHub.Redis == nil {
			return
		}
		ev := events.Event{Type: events.BillingAlert, TenantID: tenantID, Time: time.Now(), Data: data}
		if err := redisHub.Publish(ctx, ev); err != nil {
			log.WarnContext(ctx, "billing.alert not published", "source", data["source"], "error", err.Error())
		}
	}
	b := &Billing{Activities: &workflows.Billing{Plans: config.Names(cfg.Plans), Log: log}}
	overage := map[string]bool{}
	for _, tier := range cfg.Overage {
		overage[tier] = true
	}
	b.Quotas = &billing.Quotas{DB: db, AudioMinutes: config.Pairs(cfg.AudioMinutes), Overage: overage, Log: log,
		Fired: func(ctx context.Context, t *store.Tenant, a store.BillingAlert, notes []store.Notification) {
			if m != nil {
				m.BillingAlerts.WithLabelValues(a.Metric, strconv.Itoa(a.Threshold)).Inc()
			}
			notifier.Published(ctx, notes)
			publishAlert(ctx, t.ID.String(), map[string]any{
				"metric": a.Metric, "threshold": a.Threshold, "used": a.Used, "quota": a.Quota,
				"source": "avb", "period_start": a.PeriodStart.Format(time.DateOnly), "overage": overage[t.Tier],
			})
		}}
	notifyBilling := func(ctx context.Context, n store.Notification) error {
		notes, err := db.Notifications().NotifyBilling(ctx, n)
		if err == nil {
			notifier.Published(ctx, notes)
		}
		return err
	}
	b.Webhooks = &billing.Webhooks{DB: db, HMACKey: secrets.LagoWebhook, Issuer: cfg.WebhookIssuer, MaxAge: cfg.WebhookMaxAge,
		Notify: notifyBilling, Log: log,
		// A Lago alert is a billing.alert on the tenant's stream too
		// (source "lago"), next to avb's own quota alerts.
		Alerted: func(ctx context.Context, data map[string]any) {
			if id, ok := tenancy.ID(ctx); ok {
				publishAlert(ctx, id.String(), map[string]any{
					"source": "lago", "alert_code": data["alert_code"], "alert_name": data["alert_name"],
					"metric": data["billable_metric_code"], "current_value": data["current_value"],
				})
			}
		}}
	if m != nil {
		b.Webhooks.Observe = func(outcome string) { m.BillingWebhooks.WithLabelValues(outcome).Inc() }
	}
	if cfg.LagoURL == "" {
		return b, nil
	}
	hc := &http.Client{Timeout: cfg.Timeout, Transport: deps.Guard("lago").Transport(nil, cfg.Timeout, cfg.Timeout)}
	c, err := lago.NewWithKey(cfg.LagoURL, secrets.LagoAPI, hc)
	if err != nil {
		return nil, fmt.Errorf("lago: %w", err)
	}
	c.AttemptTimeout = cfg.Timeout
	b.Lago = c
	b.Webhooks.PublicKey = c.WebhookPublicKey
	b.Activities.Provisioner = &billing.Provisioner{DB: db, Lago: c, Plans: b.Activities.Plans}
	b.Activities.Syncer = &billing.Syncer{DB: db, Lago: c, Log: log, FailingAfter: cfg.SyncFailingAfter, Notify: notifyBilling}
	if m != nil {
		b.Activities.Syncer.Observe = func(sent, failed, failing int) {
			m.BillingEventsSent.Add(float64(sent))
			m.BillingSyncFailed.Add(float64(failed))
			m.BillingSyncFailing.Set(float64(failing))
		}
	}
	return b, nil
}
