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
)

// Event types.
const (
	SessionEnded = "session.ended"
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

// Subscribe delivers the events published on channels until ctx is done.
// It returns once the subscription is live, so nothing published after it
// returns is missed.
func (p Hub) Subscribe(ctx context.Context, channels ...string) (<-chan Event, error) {
	sub := p.Redis.Subscribe(ctx, channels...)
	if _, err := sub.Receive(ctx); err != nil {
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
