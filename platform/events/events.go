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
	Time     time.Time      `json:"time"`
	Data     map[string]any `json:"data,omitempty"`
}

// TenantChannel is the Redis channel of a tenant's events.
func TenantChannel(tenantID string) string { return "avb:events:tenant:" + tenantID }

// Publisher sends events.
type Publisher struct{ Redis *redis.Client }

// Publish sends ev on its tenant's channel.
func (p Publisher) Publish(ctx context.Context, ev Event) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	if err := p.Redis.Publish(ctx, TenantChannel(ev.TenantID), b).Err(); err != nil {
		return fmt.Errorf("publish %s: %w", ev.Type, err)
	}
	return nil
}
