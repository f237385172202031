package workflows

import (
	"context"
	"time"

	"github.com/agentvoicebox/avb/platform/events"
)

// Notifications are the activities of the notifications task queue: they
// tell a tenant's subscribers what happened.
type Notifications struct {
	Events events.Hub
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
	return n.Events.Publish(ctx, events.Event{Type: events.SessionEnded, TenantID: in.TenantID, Time: in.At, Data: map[string]any{
		"session_id": in.SessionID, "status": in.Outcome.Status, "reason": in.Outcome.Reason,
		"turns": m.Turns, "duration_seconds": m.DurationSeconds, "input_tokens": m.InputTokens, "output_tokens": m.OutputTokens,
	}})
}
