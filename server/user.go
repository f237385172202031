package server

import (
	"context"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/agentvoicebox/avb/authn"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/store"
)

// maxPreferencesBytes bounds a user's preferences document.
const maxPreferencesBytes = 16 << 10

// NewUserServer returns the UserService handler.
func NewUserServer(deps Identity) avbv1connect.UserServiceHandler { return &userServer{deps} }

type userServer struct{ Identity }

// me returns the calling user's id; API keys and sysadmins acting in a
// tenant they do not belong to have no user row there.
func me(ctx context.Context) (uuid.UUID, error) {
	p := authn.PrincipalFrom(ctx)
	if p == nil || p.Kind != authn.KindUser || p.UserID == uuid.Nil {
		return uuid.Nil, apierrorNotFound("the caller is not a user of this tenant")
	}
	return p.UserID, nil
}

func (s *userServer) GetMe(ctx context.Context, _ *connect.Request[avbv1.GetMeRequest]) (*connect.Response[avbv1.GetMeResponse], error) {
	id, err := me(ctx)
	if err != nil {
		return nil, err
	}
	u, err := s.DB.Users().Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.GetMeResponse{User: userToProto(u)}), nil
}

func (s *userServer) UpdateMe(ctx context.Context, req *connect.Request[avbv1.UpdateMeRequest]) (*connect.Response[avbv1.UpdateMeResponse], error) {
	id, err := me(ctx)
	if err != nil {
		return nil, err
	}
	raw, err := protojson.Marshal(req.Msg.GetPreferences())
	if err != nil {
		return nil, err
	}
	if len(raw) > maxPreferencesBytes {
		return nil, invalidArgument("preferences: at most 16 KiB of JSON")
	}
	u, err := s.DB.Users().SetPreferences(ctx, id, raw)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.UpdateMeResponse{User: userToProto(u)}), nil
}

func (s *userServer) ListUsers(ctx context.Context, req *connect.Request[avbv1.ListUsersRequest]) (*connect.Response[avbv1.ListUsersResponse], error) {
	rows, next, err := s.DB.Users().List(ctx, req.Msg.GetActiveOnly(), store.PageSize(req.Msg.GetPageSize()), req.Msg.GetPageToken())
	if err != nil {
		return nil, err
	}
	res := &avbv1.ListUsersResponse{NextPageToken: next}
	for i := range rows {
		res.Users = append(res.Users, userToProto(&rows[i]))
	}
	return connect.NewResponse(res), nil
}

func (s *userServer) GetUser(ctx context.Context, req *connect.Request[avbv1.GetUserRequest]) (*connect.Response[avbv1.GetUserResponse], error) {
	id, err := parseID(req.Msg.GetUserId())
	if err != nil {
		return nil, err
	}
	u, err := s.DB.Users().Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.GetUserResponse{User: userToProto(u)}), nil
}

func (s *userServer) DeactivateUser(ctx context.Context, req *connect.Request[avbv1.DeactivateUserRequest]) (*connect.Response[avbv1.DeactivateUserResponse], error) {
	id, err := parseID(req.Msg.GetUserId())
	if err != nil {
		return nil, err
	}
	u, err := s.DB.Users().Deactivate(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.Bus.Publish(ctx, authn.TopicUser, u.Subject); err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.DeactivateUserResponse{User: userToProto(u)}), nil
}
