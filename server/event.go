package server

import (
	"context"
	"slices"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentvoicebox/avb/apierror"
	"github.com/agentvoicebox/avb/authn"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/platform/events"
)

// EventSource is where subscribers' events come from.
type EventSource interface {
	Subscribe(ctx context.Context, channels ...string) (<-chan events.Event, error)
}

// eventHeartbeatEvery is how long a subscription may be quiet before a heartbeat.
const eventHeartbeatEvery = 15 * time.Second

// NewEventServer returns the EventService handler.
func NewEventServer(src EventSource) avbv1connect.EventServiceHandler {
	return &eventServer{src: src}
}

type eventServer struct{ src EventSource }

func (s *eventServer) Subscribe(ctx context.Context, req *connect.Request[avbv1.SubscribeRequest], stream *connect.ServerStream[avbv1.SubscribeResponse]) error {
	tenantID, err := callerTenant(ctx)
	if err != nil {
		return err
	}
	channels := []string{events.TenantChannel(tenantID.String())}
	if p := authn.PrincipalFrom(ctx); p != nil && p.UserID != uuid.Nil {
		channels = append(channels, events.UserChannel(tenantID.String(), p.UserID.String()))
	}
	evs, err := s.src.Subscribe(ctx, channels...)
	if err != nil {
		return apierror.New(connect.CodeUnavailable, avbv1.ErrorReason_ERROR_REASON_DEPENDENCY_UNAVAILABLE, "events are unavailable; retry shortly")
	}
	heartbeat := &avbv1.SubscribeResponse{Message: &avbv1.SubscribeResponse_Heartbeat{Heartbeat: &avbv1.EventHeartbeat{}}}
	if err := stream.Send(heartbeat); err != nil {
		return err
	}
	quiet := time.NewTicker(eventHeartbeatEvery)
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-evs:
			if !ok {
				return apierror.New(connect.CodeUnavailable, avbv1.ErrorReason_ERROR_REASON_DEPENDENCY_UNAVAILABLE, "the event subscription ended; subscribe again")
			}
			if ev.TenantID != tenantID.String() || (len(req.Msg.GetTypes()) > 0 && !slices.Contains(req.Msg.GetTypes(), ev.Type)) {
				continue
			}
			if err := stream.Send(&avbv1.SubscribeResponse{Message: &avbv1.SubscribeResponse_Event{Event: eventToProto(ev)}}); err != nil {
				return err
			}
			quiet.Reset(eventHeartbeatEvery)
		case <-quiet.C:
			if err := stream.Send(heartbeat); err != nil {
				return err
			}
		}
	}
}

func eventToProto(ev events.Event) *avbv1.PlatformEvent {
	out := &avbv1.PlatformEvent{Type: ev.Type, TenantId: ev.TenantID, UserId: ev.UserID, Time: timestamppb.New(ev.Time)}
	if data, err := structpb.NewStruct(ev.Data); err == nil {
		out.Data = data
	}
	return out
}
