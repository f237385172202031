package workflows

import (
	"context"
	"encoding/json"
	"time"

	"github.com/agentvoicebox/avb/platform/events"
	"github.com/agentvoicebox/avb/store"
)

// Notifications are the activities of the notifications task queue: they
// tell a tenant's subscribers what happened.
type Notifications struct {
	Events events.Hub
	// Notifier, when set, leaves a tenant notification for sessions that
	// end in error.
	Notifier *events.Notifier
	// Ended, when set, counts a session workflow's end by its final status.
	Ended func(status string)
}

// SessionEndedInput is a session's end, for its tenant's subscribers.
type SessionEndedInput struct {
	SessionID, TenantID string
	Outcome             Outcome
	At                  time.Time
}

// SessionEnded publishes session.ended to the session's tenant.
func (n *Notifications) SessionEnded(ctx context.Context, in SessionEndedInput) error {
	m := in.Outcome.Metrics
	if in.Outcome.Status == "error" && n.Notifier != nil {
		tctx, _, err := scope(ctx, in.TenantID, in.SessionID)
		if err != nil {
			return err
		}
		key := "session.failed:" + in.SessionID
		data, _ := json.Marshal(map[string]any{"session_id": in.SessionID, "reason": in.Outcome.Reason})
		if err := n.Notifier.Notify(tctx, &store.Notification{
			Type: "session.failed", Severity: "error", Title: "A session ended in error",
			Body: "Session " + in.SessionID + " ended: " + in.Outcome.Reason + ".", Data: data, DedupeKey: &key,
		}); err != nil {
			return err
		}
	}
	err := n.Events.Publish(ctx, events.Event{Type: events.SessionEnded, TenantID: in.TenantID, Time: in.At, Data: map[string]any{
		"session_id": in.SessionID, "status": in.Outcome.Status, "reason": in.Outcome.Reason,
		"turns": m.Turns, "duration_seconds": m.DurationSeconds, "input_tokens": m.InputTokens, "output_tokens": m.OutputTokens,
	}})
	if err == nil && n.Ended != nil {
		n.Ended(in.Outcome.Status)
	}
	return err
}
