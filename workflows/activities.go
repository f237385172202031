package workflows

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/activity"

	"github.com/agentvoicebox/avb/billing"
	"github.com/agentvoicebox/avb/platform/dependency"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

// Activities are the session workflow's side effects, on the database.
type Activities struct {
	DB *store.DB
	// EndLiveCall, when set, closes the session's live call on whichever
	// instance holds it (the workflow ended it: 24 h, idle, terminated).
	EndLiveCall func(ctx context.Context, sessionID, reason string) error
	// Held, when set, reports whether a server still holds the
	// session's call (its call-limit slot is renewed). A call holds it until
	// its end has reached the workflow, so a call whose reports are held up
	// (Temporal was unreachable from its server) is not taken for dead.
	Held func(ctx context.Context, tenantID, sessionID string) (bool, error)
	// AuditRetention is the audit log's retention in days: the default
	// and the longest a tenant may ask for (zero: 90 and 365).
	AuditRetention struct{ Days, MaxDays int }
	// Quotas, when set, fires the usage alerts a session's recorded usage
	// reaches.
	Quotas *billing.Quotas
}

// CallHeldInput names a session.
type CallHeldInput struct{ SessionID, TenantID string }

// CallHeld reports whether a live server still holds the session's call.
func (a *Activities) CallHeld(ctx context.Context, in CallHeldInput) (bool, error) {
	if a.Held == nil {
		return false, nil
	}
	return a.Held(ctx, in.TenantID, in.SessionID)
}

// FinalizeInput records a session's end.
type FinalizeInput struct {
	SessionID, TenantID string
	Outcome             Outcome
}

// UsageInput records a session's usage.
type UsageInput struct {
	SessionID, TenantID string
	Metrics             Metrics
}

// TranscriptInput stores a session's turns.
type TranscriptInput struct {
	SessionID, TenantID string
	Turns               []Turn
}

func scope(ctx context.Context, tenantID, sessionID string) (context.Context, uuid.UUID, error) {
	t, err := uuid.Parse(tenantID)
	if err != nil {
		return nil, uuid.Nil, fmt.Errorf("tenant id: %w", err)
	}
	s, err := uuid.Parse(sessionID)
	if err != nil {
		return nil, uuid.Nil, fmt.Errorf("session id: %w", err)
	}
	return tenancy.With(ctx, t), s, nil
}

// FinalizeSession writes the session's final status and the workflow's metrics.
func (a *Activities) FinalizeSession(ctx context.Context, in FinalizeInput) error {
	ctx, id, err := scope(ctx, in.TenantID, in.SessionID)
	if err != nil {
		return err
	}
	if a.EndLiveCall != nil && in.Outcome.Reason != "" {
		// Best effort within half the attempt: recording the end matters
		// more than telling a call that may be gone already.
		ectx, cancel := halfOf(ctx)
		err := untilAvailable(ectx, func() error { return a.EndLiveCall(ectx, in.SessionID, in.Outcome.Reason) })
		cancel()
		if err != nil {
			activity.GetLogger(ctx).Warn("live call not told of its end", "session_id", in.SessionID, "error", err.Error())
		}
	}
	m := in.Outcome.Metrics
	switch in.Outcome.Reason {
	case ReasonMaxDuration, ReasonIdle, ReasonLost:
		// The platform ended the call on its own: the end is audited, with
		// the session's final status, in the transaction that records it.
		ctx, _ = store.WithAudit(ctx, store.AuditEntry{ActorType: "system", Action: "update", ResourceType: "session",
			ResourceID: in.SessionID, Description: "session ended by the platform: " + in.Outcome.Reason,
			NewValues: store.AuditValues(map[string]any{"status": in.Outcome.Status, "reason": in.Outcome.Reason})})
	}
	return untilAvailable(ctx, func() error {
		_, err := a.DB.Sessions().Finish(ctx, id, in.Outcome.Status, in.Outcome.Reason, store.SessionMetrics{
			DurationSeconds: m.DurationSeconds, InputTokens: m.InputTokens, OutputTokens: m.OutputTokens,
			InputAudioSeconds: m.InputAudioSeconds, OutputAudioSeconds: m.OutputAudioSeconds, Turns: m.Turns,
			ToolCalls: m.ToolCalls,
		})
		return err
	})
}

// untilAvailable runs fn again, with backoff, while it fails because a
// dependency is unavailable, until ctx (the attempt's deadline) ends: an
// outage shorter than an attempt costs no attempt of the retry policy.
func untilAvailable(ctx context.Context, fn func() error) error {
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		err := fn()
		if err == nil || !errors.Is(err, dependency.ErrUnavailable) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
	}
}

// halfOf is ctx with half of its remaining time.
func halfOf(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok {
		return context.WithTimeout(ctx, time.Until(d)/2)
	}
	return context.WithTimeout(ctx, 30*time.Second)
}

// RecordUsage writes the session's usage to the ledger, once.
func (a *Activities) RecordUsage(ctx context.Context, in UsageInput) error {
	ctx, id, err := scope(ctx, in.TenantID, in.SessionID)
	if err != nil {
		return err
	}
	m := in.Metrics
	err = untilAvailable(ctx, func() error {
		return a.DB.Sessions().RecordUsage(ctx, []store.UsageEntry{
			{SessionID: id, Kind: "session", Quantity: 1},
			{SessionID: id, Kind: "audio_in_seconds", Quantity: m.InputAudioSeconds},
			{SessionID: id, Kind: "audio_out_seconds", Quantity: m.OutputAudioSeconds},
			{SessionID: id, Kind: "input_tokens", Quantity: float64(m.InputTokens)},
			{SessionID: id, Kind: "output_tokens", Quantity: float64(m.OutputTokens)},
		})
	})
	if err != nil || a.Quotas == nil {
		return err
	}
	// Audio minutes are known once the call's usage is: the alerts they
	// reach fire now (once each, however often this is retried).
	tenantID, _ := tenancy.ID(ctx) // set by scope
	t, err := a.DB.Tenants().Get(ctx, tenantID)
	if err != nil {
		return err
	}
	return a.Quotas.CheckAlerts(ctx, t)
}

// StoreTranscript saves the session's turns.
func (a *Activities) StoreTranscript(ctx context.Context, in TranscriptInput) error {
	ctx, id, err := scope(ctx, in.TenantID, in.SessionID)
	if err != nil {
		return err
	}
	b, err := json.Marshal(in.Turns)
	if err != nil {
		return err
	}
	return untilAvailable(ctx, func() error { return a.DB.Sessions().StoreTranscript(ctx, id, b) })
}
