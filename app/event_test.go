package app_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/events"
	"github.com/agentvoicebox/avb/store"
)

// EventService.Subscribe delivers the tenant's events and the caller's own,
// through any instance (Redis pub/sub), filtered by type; never another
// tenant's or another user's.
func TestSubscribeDeliversTenantAndUserEvents(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten, other := p.tenant("events", store.TierPro), p.tenant("others", store.TierPro)
	tok := p.token("ada", ten.ID.String(), "admin")
	me := wantOK(t, p.call("/avb.v1.UserService/GetMe", "{}", bearer(tok)...))["user"].(map[string]any)["id"].(string)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := avbv1connect.NewEventServiceClient(http.DefaultClient, p.base, connect.WithInterceptors(bearerInterceptor(tok)))
	stream, err := client.Subscribe(ctx, connect.NewRequest(&avbv1.SubscribeRequest{Types: []string{events.SessionEnded, "user.note"}}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() || stream.Msg().GetHeartbeat() == nil {
		t.Fatalf("no first heartbeat: %v", stream.Err())
	}

	// Published from "another instance": a plain Redis client.
	opts, _ := redis.ParseURL(testenv.RedisURL(t))
	hub := events.Hub{Redis: redis.NewClient(opts)}
	defer hub.Redis.Close()
	now := time.Now()
	for _, ev := range []events.Event{
		{Type: "session.started", TenantID: ten.ID.String(), Time: now},                                   // filtered out by type
		{Type: events.SessionEnded, TenantID: other.ID.String(), Time: now},                               // another tenant
		{Type: "user.note", TenantID: ten.ID.String(), UserID: uuid.NewString(), Time: now},               // another user
		{Type: events.SessionEnded, TenantID: ten.ID.String(), Time: now, Data: map[string]any{"n": 1.0}}, // delivered
		{Type: "user.note", TenantID: ten.ID.String(), UserID: me, Time: now, Data: map[string]any{"n": 2.0}},
	} {
		if err := hub.Publish(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	var got []*avbv1.PlatformEvent
	for len(got) < 2 && stream.Receive() {
		if ev := stream.Msg().GetEvent(); ev != nil {
			got = append(got, ev)
		}
	}
	if len(got) != 2 || got[0].GetType() != events.SessionEnded || got[0].GetData().AsMap()["n"] != 1.0 ||
		got[1].GetType() != "user.note" || got[1].GetUserId() != me || got[1].GetData().AsMap()["n"] != 2.0 {
		t.Fatalf("events %v (%v)", got, stream.Err())
	}

	// Without credentials: refused before anything is streamed.
	anon := avbv1connect.NewEventServiceClient(http.DefaultClient, p.base)
	s2, err := anon.Subscribe(ctx, connect.NewRequest(&avbv1.SubscribeRequest{}))
	if err == nil {
		for s2.Receive() {
		}
		err = s2.Err()
	}
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("anonymous subscribe: %v", err)
	}
}
