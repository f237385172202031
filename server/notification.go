package server

import (
	"context"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/agentvoicebox/avb/apierror"
	"github.com/agentvoicebox/avb/authn"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/store"
)

// NewNotificationServer returns the NotificationService handler.
func NewNotificationServer(db *store.DB) avbv1connect.NotificationServiceHandler {
	return &notificationServer{db}
}

type notificationServer struct{ db *store.DB }

// callerUser is the calling user; notifications belong to people.
func callerUser(ctx context.Context) (uuid.UUID, error) {
	p := authn.PrincipalFrom(ctx)
	if p == nil || p.Kind != authn.KindUser || p.UserID == uuid.Nil {
		return uuid.Nil, apierror.New(connect.CodePermissionDenied, avbv1.ErrorReason_ERROR_REASON_PERMISSION_DENIED,
			"notifications belong to users: call with a user's token, not an API key")
	}
	return p.UserID, nil
}

func notificationToProto(n *store.Notification) *avbv1.Notification {
	out := &avbv1.Notification{Id: n.ID.String(), Type: n.Type, Title: n.Title, Body: n.Body, Read: n.Read,
		Severity:   avbv1.NotificationSeverity(enumValue(avbv1.NotificationSeverity_value, "NOTIFICATION_SEVERITY_", n.Severity)),
		CreateTime: ts(n.CreatedAt)}
	if n.UserID != nil {
		out.UserId = n.UserID.String()
	}
	if len(n.Data) > 2 {
		s := &structpb.Struct{}
		if s.UnmarshalJSON(n.Data) == nil {
			out.Data = s
		}
	}
	return out
}

func (s *notificationServer) ListNotifications(ctx context.Context, req *connect.Request[avbv1.ListNotificationsRequest]) (*connect.Response[avbv1.ListNotificationsResponse], error) {
	user, err := callerUser(ctx)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	rows, next, unread, err := s.db.Notifications().List(ctx, user, m.GetUnreadOnly(), store.PageSize(m.GetPageSize()), m.GetPageToken())
	if err != nil {
		return nil, err
	}
	res := &avbv1.ListNotificationsResponse{NextPageToken: next, UnreadCount: unread}
	for i := range rows {
		res.Notifications = append(res.Notifications, notificationToProto(&rows[i]))
	}
	return connect.NewResponse(res), nil
}

func (s *notificationServer) MarkNotificationsRead(ctx context.Context, req *connect.Request[avbv1.MarkNotificationsReadRequest]) (*connect.Response[avbv1.MarkNotificationsReadResponse], error) {
	user, err := callerUser(ctx)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	if m.GetAll() == (len(m.GetNotificationIds()) > 0) {
		return nil, apierror.Field("notification_ids", "name notifications, or set all (not both)")
	}
	var ids []uuid.UUID
	for _, raw := range m.GetNotificationIds() {
		id, err := parseID(raw)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	marked, unread, err := s.db.Notifications().MarkRead(ctx, user, ids)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.MarkNotificationsReadResponse{MarkedCount: marked, UnreadCount: unread}), nil
}
