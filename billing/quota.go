package billing

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/agentvoicebox/avb/apierror"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/store"
)

// Quota metrics.
const (
	MetricSessions     = "sessions"
	MetricAudioMinutes = "audio_minutes"
)

// Thresholds are the percentages of a quota that raise an alert, once per
// billing period each.
var Thresholds = []int{80, 100}

// Quotas holds each tier's monthly quotas: the tenant's own sessions a
// month, and audio minutes per tier. At 100% a tier either bills overage or
// refuses new sessions; a call already live is never cut.
type Quotas struct {
	DB *store.DB
	// AudioMinutes is each tier's monthly audio minutes (absent or 0: none).
	AudioMinutes map[string]int
	// Overage lists the tiers that may go past 100% (billed as overage).
	Overage map[string]bool
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Fired, when set, hears each alert the moment it fires, with the
	// notifications it wrote (to publish them live).
	Fired func(ctx context.Context, t *store.Tenant, a store.BillingAlert, notes []store.Notification)
	Log   *slog.Logger

	// known holds the alerts this instance knows have fired (tenant,
	// period, metric, threshold): a fired alert stays fired for its period,
	// so a tenant past 80% does not cost every new session a write.
	known sync.Map
}

// MonthUsage is a tenant's use of its quotas in the current period.
type MonthUsage struct {
	PeriodStart  time.Time
	Sessions     float64
	AudioMinutes float64
}

func (q *Quotas) now() time.Time {
	if q.Now == nil {
		return time.Now()
	}
	return q.Now()
}

// Usage reads the tenant's (in ctx) month to date.
func (q *Quotas) Usage(ctx context.Context) (MonthUsage, error) {
	start, _ := Month(q.now())
	n, seconds, err := q.DB.MonthUsage(ctx, start)
	if err != nil {
		return MonthUsage{}, err
	}
	return MonthUsage{PeriodStart: start, Sessions: float64(n), AudioMinutes: seconds / 60}, nil
}

// limits are the tenant's quotas by metric (0: none).
func (q *Quotas) limits(t *store.Tenant) map[string]float64 {
	return map[string]float64{MetricSessions: float64(t.MaxSessionsPerMonth), MetricAudioMinutes: float64(q.AudioMinutes[t.Tier])}
}

func used(u MonthUsage, metric string) float64 {
	if metric == MetricSessions {
		return u.Sessions
	}
	return u.AudioMinutes
}

// AdmitSession decides whether the tenant t (the tenant in ctx) may start
// one more session. It refuses with resource_exhausted / quota_exceeded
// when a quota is used up and the tier bills no overage, and fires the
// alerts the new session reaches.
func (q *Quotas) AdmitSession(ctx context.Context, t *store.Tenant) error {
	u, err := q.Usage(ctx)
	if err != nil {
		return err
	}
	if !q.Overage[t.Tier] {
		for _, metric := range []string{MetricSessions, MetricAudioMinutes} {
			limit := q.limits(t)[metric]
			if limit > 0 && used(u, metric) >= limit {
				return QuotaExceeded(metric, used(u, metric), limit, u.PeriodStart)
			}
		}
	}
	u.Sessions++ // the session about to start
	q.alert(ctx, t, u)
	return nil
}

// CheckAlerts fires the alerts the tenant's usage has reached (after usage
// was recorded).
func (q *Quotas) CheckAlerts(ctx context.Context, t *store.Tenant) error {
	u, err := q.Usage(ctx)
	if err != nil {
		return err
	}
	return q.alert(ctx, t, u)
}

// alert fires each threshold reached and not fired yet this period. The
// database decides which instance fires it (one row per threshold), so two
// instances racing fire it once.
func (q *Quotas) alert(ctx context.Context, t *store.Tenant, u MonthUsage) error {
	for metric, limit := range q.limits(t) {
		if limit <= 0 {
			continue
		}
		have := used(u, metric)
		for _, th := range Thresholds {
			if have < limit*float64(th)/100 {
				continue
			}
			key := fmt.Sprintf("billing.alert:%s:%s:%d", u.PeriodStart.Format("2006-01"), metric, th)
			if _, done := q.known.Load(t.ID.String() + "|" + key); done {
				continue
			}
			a := store.BillingAlert{PeriodStart: u.PeriodStart, Metric: metric, Threshold: th, Used: have, Quota: limit}
			fired, notes, err := q.DB.FireBillingAlert(ctx, &a, alertNotification(t, a, q.Overage[t.Tier], key))
			if err != nil {
				if q.Log != nil {
					q.Log.ErrorContext(ctx, "billing alert not recorded", "metric", metric, "threshold", th, "error", err.Error())
				}
				return err
			}
			q.known.Store(t.ID.String()+"|"+key, true) // fired now, or by another instance before
			if fired && q.Fired != nil {
				q.Fired(ctx, t, a, notes)
			}
		}
	}
	return nil
}

func alertNotification(t *store.Tenant, a store.BillingAlert, overage bool, key string) store.Notification {
	what := map[string]string{MetricSessions: "sessions", MetricAudioMinutes: "audio minutes"}[a.Metric]
	title := fmt.Sprintf("%d%% of this month's %s used", a.Threshold, what)
	body := fmt.Sprintf("%s has used %s of %s %s this month (plan %s).", t.Name, trim(a.Used), trim(a.Quota), what, t.Tier)
	severity := "warning"
	if a.Threshold >= 100 {
		severity = "error"
		if overage {
			body += " Further usage is billed as overage."
		} else {
			body += " New sessions are refused until the next period or a plan upgrade; calls already live go on."
		}
	}
	data := fmt.Sprintf(`{"metric":%q,"threshold":%d,"used":%s,"quota":%s,"period_start":%q}`,
		a.Metric, a.Threshold, trim(a.Used), trim(a.Quota), a.PeriodStart.Format(time.DateOnly))
	return store.Notification{Type: "billing.alert", Severity: severity, Title: title, Body: body, Data: []byte(data), DedupeKey: &key}
}

func trim(f float64) string {
	return strconv.FormatFloat(math.Round(f*100)/100, 'f', -1, 64)
}

// QuotaExceeded is the refusal of a new session past a quota.
func QuotaExceeded(metric string, used, quota float64, periodStart time.Time) *connect.Error {
	_, end := Month(periodStart)
	return apierror.New(connect.CodeResourceExhausted, avbv1.ErrorReason_ERROR_REASON_QUOTA_EXCEEDED,
		fmt.Sprintf("this tenant used its monthly quota of %s (%s of %s); new sessions are refused until %s or a plan upgrade",
			metric, trim(used), trim(quota), end.Format(time.DateOnly)),
		"metric", metric, "used", trim(used), "quota", trim(quota), "period_end", end.Format(time.RFC3339))
}
