package server

import (
	"context"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/store"
)

// NewRoleServer returns the RoleService handler.
func NewRoleServer(deps Identity) avbv1connect.RoleServiceHandler { return &roleServer{deps} }

type roleServer struct{ Identity }

func roleWord(r avbv1.TenantRole) string { return enumWord(r.String(), "TENANT_ROLE_") }

func assignmentToProto(a *store.RoleAssignment) *avbv1.RoleAssignment {
	out := &avbv1.RoleAssignment{
		UserId:     a.UserID.String(),
		Role:       avbv1.TenantRole(enumValue(avbv1.TenantRole_value, "TENANT_ROLE_", a.Role)),
		CreateTime: ts(a.CreatedAt),
	}
	if a.GrantedBy != nil {
		out.GrantedBy = a.GrantedBy.String()
	}
	return out
}

func (s *roleServer) GrantRole(ctx context.Context, req *connect.Request[avbv1.GrantRoleRequest]) (*connect.Response[avbv1.GrantRoleResponse], error) {
	userID, err := parseID(req.Msg.GetUserId())
	if err != nil {
		return nil, err
	}
	a, err := s.Grants.GrantRole(ctx, userID, roleWord(req.Msg.GetRole()), creator(ctx))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.GrantRoleResponse{Assignment: assignmentToProto(a)}), nil
}

func (s *roleServer) RevokeRole(ctx context.Context, req *connect.Request[avbv1.RevokeRoleRequest]) (*connect.Response[avbv1.RevokeRoleResponse], error) {
	userID, err := parseID(req.Msg.GetUserId())
	if err != nil {
		return nil, err
	}
	if _, err := s.DB.Users().Get(ctx, userID); err != nil {
		return nil, err // not a user of this tenant
	}
	if err := s.Grants.RevokeRole(ctx, userID, roleWord(req.Msg.GetRole())); err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.RevokeRoleResponse{}), nil
}

func (s *roleServer) ListRoleAssignments(ctx context.Context, req *connect.Request[avbv1.ListRoleAssignmentsRequest]) (*connect.Response[avbv1.ListRoleAssignmentsResponse], error) {
	var userID uuid.UUID
	if req.Msg.GetUserId() != "" {
		var err error
		if userID, err = parseID(req.Msg.GetUserId()); err != nil {
			return nil, err
		}
	}
	rows, next, err := s.DB.Roles().List(ctx, userID, store.PageSize(req.Msg.GetPageSize()), req.Msg.GetPageToken())
	if err != nil {
		return nil, err
	}
	res := &avbv1.ListRoleAssignmentsResponse{NextPageToken: next}
	for i := range rows {
		res.Assignments = append(res.Assignments, assignmentToProto(&rows[i]))
	}
	return connect.NewResponse(res), nil
}
