package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/agentvoicebox/avb/billing/lago"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

// The billable metric codes usage is sent to Lago under; a Lago plan
// prices these.
const (
	CodeSessions     = "sessions"
	CodeAPICalls     = "api_calls"
	CodeAudioMinutes = "audio_minutes"
	CodeInputTokens  = "input_tokens"
	CodeOutputTokens = "output_tokens"
)

// SubscriptionID is the external id of a tenant's Lago subscription (one
// per tenant, kept across plan changes); its customer's is the tenant id too.
func SubscriptionID(tenantID uuid.UUID) string { return tenantID.String() }

// EventOf is the Lago event that bills one ledger row. Its transaction id
// is the row's id, so however often it is sent Lago counts it once; ok is
// false for a row with nothing to bill (a zero quantity).
func EventOf(e store.UsageEntry) (ev lago.Event, ok bool) {
	if e.Quantity <= 0 {
		return ev, false
	}
	ev = lago.Event{TransactionID: e.ID.String(), ExternalSubscriptionID: SubscriptionID(e.TenantID),
		Timestamp: e.RecordedAt.Unix(), Properties: map[string]any{}}
	if e.SessionID != uuid.Nil {
		ev.Properties["session_id"] = e.SessionID.String()
	}
	switch e.Kind {
	case "session":
		ev.Code = CodeSessions
	case "api_calls":
		ev.Code = CodeAPICalls
		ev.Properties["calls"] = e.Quantity
		if e.APIKeyID != nil {
			ev.Properties["api_key_id"] = e.APIKeyID.String()
		}
	case "audio_in_seconds", "audio_out_seconds":
		ev.Code = CodeAudioMinutes
		ev.Properties["minutes"] = e.Quantity / 60
		ev.Properties["direction"] = map[string]string{"audio_in_seconds": "input", "audio_out_seconds": "output"}[e.Kind]
	case "input_tokens":
		ev.Code, ev.Properties["tokens"] = CodeInputTokens, e.Quantity
	case "output_tokens":
		ev.Code, ev.Properties["tokens"] = CodeOutputTokens, e.Quantity
	default:
		return ev, false
	}
	return ev, true
}

// Syncer sends every tenant's unsent ledger rows to Lago, oldest first,
// and marks them sent only once Lago accepted them. A crash between the
// two sends them again, which Lago counts once (by transaction id).
type Syncer struct {
	DB   *store.DB
	Lago *lago.Client
	Log  *slog.Logger
	// FailingAfter is how many syncs of a tenant in a row may fail before
	// its billing users are told (zero: 3).
	FailingAfter int
	// Notify, when set, tells a tenant's billing users (its ctx names the
	// tenant).
	Notify func(ctx context.Context, n store.Notification) error
	// Observe, when set, hears each run's outcome: rows sent, tenants
	// whose sync failed and how many of those are past FailingAfter.
	Observe func(sent, failed, failing int)
	// PageRows is how many rows one read takes (zero: 1000).
	PageRows int

	crashAfterSend func() bool // tests: stop between send and mark
}

// errCrashed is a sync stopped between send and mark (tests).
var errCrashed = errors.New("stopped between send and mark")

// SyncReport is what one run did.
type SyncReport struct {
	Sent    int         // events Lago accepted
	Failed  []uuid.UUID // tenants whose sync failed this run
	Failing int         // of those, how many failed FailingAfter times in a row or more
}

// SyncAll syncs every tenant with unsent rows. One tenant's failure does
// not stop the others'; it returns an error only when it could not even
// list the tenants, or ctx ended.
func (s *Syncer) SyncAll(ctx context.Context) (SyncReport, error) {
	var rep SyncReport
	tenants, err := s.DB.PendingBillingTenants(ctx)
	if err != nil {
		return rep, fmt.Errorf("list tenants to bill: %w", err)
	}
	for _, id := range tenants {
		n, err := s.SyncTenant(ctx, id)
		rep.Sent += n
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		rep.Failed = append(rep.Failed, id)
		if s.failed(ctx, id, err) {
			rep.Failing++
		}
	}
	if s.Observe != nil {
		s.Observe(rep.Sent, len(rep.Failed), rep.Failing)
	}
	return rep, nil
}

// SyncTenant sends one tenant's unsent rows, in batches of at most 100, and
// returns how many events Lago accepted.
func (s *Syncer) SyncTenant(ctx context.Context, tenantID uuid.UUID) (int, error) {
	ctx = tenancy.With(ctx, tenantID)
	page := s.PageRows
	if page <= 0 {
		page = 1000
	}
	sent := 0
	var after *store.UsageEntry
	for {
		rows, err := s.DB.UnsyncedUsage(ctx, after, page)
		if err != nil {
			return sent, err
		}
		for chunk := range slices.Chunk(rows, lago.MaxBatch) {
			events := make([]lago.Event, 0, len(chunk))
			ids := make([]uuid.UUID, 0, len(chunk))
			for _, r := range chunk {
				if ev, ok := EventOf(r); ok {
					events = append(events, ev)
				}
				ids = append(ids, r.ID)
			}
			if len(events) > 0 {
				if err := s.Lago.SendEvents(ctx, events); err != nil {
					return sent, err
				}
			}
			if s.crashAfterSend != nil && s.crashAfterSend() {
				return sent, errCrashed
			}
			if err := s.DB.MarkUsageSynced(ctx, ids); err != nil {
				return sent, err
			}
			sent += len(events)
		}
		if len(rows) < page {
			return sent, s.DB.BillingSyncSucceeded(ctx)
		}
		after = &rows[len(rows)-1]
	}
}

// failed records a tenant's failed sync and, when it has failed
// FailingAfter times in a row, tells its billing users (once a day at most);
// it reports whether the tenant is past that.
func (s *Syncer) failed(ctx context.Context, tenantID uuid.UUID, cause error) bool {
	ctx = tenancy.With(ctx, tenantID)
	reason := syncFailure(cause)
	log := s.log().With("tenant_id", tenantID.String(), "error", reason)
	n, err := s.DB.BillingSyncFailed(ctx, reason)
	if err != nil {
		log.Error("billing sync failed and could not be recorded", "record_error", err.Error())
		return false
	}
	after := s.FailingAfter
	if after <= 0 {
		after = 3
	}
	if n < after {
		log.Warn("billing sync failed; the next run retries", "failures", n)
		return false
	}
	log.Error("billing sync keeps failing", "failures", n)
	if s.Notify != nil {
		key := "billing.sync_failing:" + time.Now().UTC().Format(time.DateOnly)
		if err := s.Notify(ctx, store.Notification{Type: "billing.sync_failing", Severity: "error",
			Title: "Usage is not reaching billing",
			Body:  "The last " + strconv.Itoa(n) + " attempts to send this tenant's usage to billing failed: " + reason + ". Usage is kept and will be sent once billing accepts it.",
			Data:  []byte(`{"failures":` + strconv.Itoa(n) + `}`), DedupeKey: &key}); err != nil {
			log.Error("could not notify billing users", "notify_error", err.Error())
		}
	}
	return true
}

// syncFailure is a sync error as billing users may read it: Lago's answer,
// or that Lago could not be reached (never a key or an internal address).
func syncFailure(err error) string {
	var apiErr *lago.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Error()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "billing did not answer in time"
	}
	return "billing could not be reached"
}

func (s *Syncer) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}
