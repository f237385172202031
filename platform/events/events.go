// Package events publishes platform events to the tenants they concern,
// through Redis pub/sub, so every gateway instance can deliver every event
// to its subscribers (EventService.Subscribe).
package events

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/agentvoicebox/avb/store"
)

// Event types.
const (
	SessionEnded        = "session.ended"
	NotificationCreated = "notification.created"
	// BillingAlert: the tenant's month-to-date usage passed 80% or 100% of
	// a quota (once per threshold and period).
	BillingAlert = "billing.alert"
)

// Event is one thing that happened for a tenant.
type Event struct {
	Type     string         `json:"type"`
	TenantID string         `json:"tenant_id"`
	UserID   string         `json:"user_id,omitempty"` // set: for this user only
	Time     time.Time      `json:"time"`
	Data     map[string]any `json:"data,omitempty"`
}

// TenantChannel is the Redis channel of a tenant's events.
func TenantChannel(tenantID string) string { return "avb:events:tenant:" + tenantID }

// UserChannel is the Redis channel of one user's events.
func UserChannel(tenantID, userID string) string {
	return "avb:events:user:" + tenantID + ":" + userID
}

// Channel is where ev is published.
func (ev Event) Channel() string {
	if ev.UserID != "" {
		return UserChannel(ev.TenantID, ev.UserID)
	}
	return TenantChannel(ev.TenantID)
}

// Hub publishes events and subscribes to them. Pub/sub delivers at most
// once: a subscriber whose connection drops misses what is published until
// it is back.
type Hub struct{ Redis *redis.Client }

// Publish sends ev on its channel (its user's, or its tenant's).
func (p Hub) Publish(ctx context.Context, ev Event) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	if err := p.Redis.Publish(ctx, ev.Channel(), b).Err(); err != nil {
		return fmt.Errorf("publish %s: %w", ev.Type, err)
	}
	return nil
}

// SubscribeTimeout bounds the wait for Redis to confirm a subscription.
const SubscribeTimeout = 2 * time.Second

// Subscribe delivers the events published on channels until ctx is done.
// It returns once the subscription is live, so nothing published after it
// returns is missed.
func (p Hub) Subscribe(ctx context.Context, channels ...string) (<-chan Event, error) {
	sub := p.Redis.Subscribe(ctx, channels...)
	// A Redis that does not answer fails the subscription in bounded time.
	rctx, cancel := context.WithTimeout(ctx, SubscribeTimeout)
	defer cancel()
	if _, err := sub.Receive(rctx); err != nil {
		_ = sub.Close()
		return nil, fmt.Errorf("subscribe to events: %w", err)
	}
	out := make(chan Event, 64)
	go func() {
		defer close(out)
		defer sub.Close()
		msgs := sub.Channel()
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-msgs:
				if !ok {
					return
				}
				var ev Event
				if json.Unmarshal([]byte(m.Payload), &ev) != nil {
					continue
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// Notifier stores notifications and delivers each new one live, as a
// notification.created event on its user's or its tenant's channel.
type Notifier struct {
	DB  *store.DB
	Hub Hub
}

// Published delivers notifications already stored (best effort: they are
// in the inbox whatever happens here).
func (p Notifier) Published(ctx context.Context, notes []store.Notification) {
	for i := range notes {
		_ = p.publish(ctx, &notes[i])
	}
}

// Notify stores n for the tenant in ctx and publishes it. A notification
// with a dedupe key already used is neither stored nor published again.
func (p Notifier) Notify(ctx context.Context, n *store.Notification) error {
	created, err := p.DB.Notifications().Create(ctx, n)
	if err != nil || !created {
		return err
	}
	return p.publish(ctx, n)
}

func (p Notifier) publish(ctx context.Context, n *store.Notification) error {
	if p.Hub.Redis == nil {
		return nil
	}
	ev := Event{Type: NotificationCreated, TenantID: n.TenantID.String(), Time: n.CreatedAt, Data: map[string]any{
		"notification_id": n.ID.String(), "type": n.Type, "severity": n.Severity, "title": n.Title, "body": n.Body,
	}}
	if n.UserID != nil {
		ev.UserID = n.UserID.String()
	}
	return p.Hub.Publish(ctx, ev)
}
