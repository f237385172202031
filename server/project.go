package server

import (
	"context"

	"connectrpc.com/connect"

	"github.com/agentvoicebox/avb/apierror"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/store"
)

// NewProjectServer returns the ProjectService handler.
func NewProjectServer(deps Identity) avbv1connect.ProjectServiceHandler {
	return &projectServer{named[*avbv1.Project]{Identity: deps, kind: store.Projects, objType: "project",
		field: "project", new: func() *avbv1.Project { return &avbv1.Project{} }}}
}

type projectServer struct{ named[*avbv1.Project] }

func (s *projectServer) CreateProject(ctx context.Context, req *connect.Request[avbv1.CreateProjectRequest]) (*connect.Response[avbv1.CreateProjectResponse], error) {
	m := req.Msg
	p, err := s.create(ctx, m.GetRequestId(), &avbv1.Project{Name: m.GetName(), Description: m.GetDescription(), VoiceDefaults: m.GetVoiceDefaults()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.CreateProjectResponse{Project: p}), nil
}

func (s *projectServer) GetProject(ctx context.Context, req *connect.Request[avbv1.GetProjectRequest]) (*connect.Response[avbv1.GetProjectResponse], error) {
	p, err := s.get(ctx, req.Msg.GetProjectId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.GetProjectResponse{Project: p}), nil
}

func (s *projectServer) ListProjects(ctx context.Context, req *connect.Request[avbv1.ListProjectsRequest]) (*connect.Response[avbv1.ListProjectsResponse], error) {
	m := req.Msg
	items, next, err := s.list(ctx, listParams{pageSize: m.GetPageSize(), pageToken: m.GetPageToken(), nameContains: m.GetNameContains(), order: m.GetOrderBy()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.ListProjectsResponse{Projects: items, NextPageToken: next}), nil
}

func (s *projectServer) UpdateProject(ctx context.Context, req *connect.Request[avbv1.UpdateProjectRequest]) (*connect.Response[avbv1.UpdateProjectResponse], error) {
	p, err := s.update(ctx, req.Msg.GetProjectId(), req.Msg.GetProject(), req.Msg.GetUpdateMask())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.UpdateProjectResponse{Project: p}), nil
}

func (s *projectServer) DeleteProject(ctx context.Context, req *connect.Request[avbv1.DeleteProjectRequest]) (*connect.Response[avbv1.DeleteProjectResponse], error) {
	id, err := parseID(req.Msg.GetProjectId())
	if err != nil {
		return nil, err
	}
	live, err := s.DB.Resources(store.Projects).LiveSessions(ctx, id)
	if err != nil {
		return nil, err
	}
	if live > 0 {
		return nil, apierror.New(connect.CodeFailedPrecondition, avbv1.ErrorReason_ERROR_REASON_CONFLICT,
			"the project has live sessions; terminate them first")
	}
	if err := s.delete(ctx, req.Msg.GetProjectId()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.DeleteProjectResponse{}), nil
}

func projectRoleWord(r avbv1.ProjectRole) string { return enumWord(r.String(), "PROJECT_ROLE_") }

func (s *projectServer) member(ctx context.Context, project, user string, role avbv1.ProjectRole, grant bool) error {
	pid, err := parseID(project)
	if err != nil {
		return err
	}
	uid, err := parseID(user)
	if err != nil {
		return err
	}
	if _, err := s.DB.Resources(store.Projects).Get(ctx, pid); err != nil {
		return err
	}
	return s.Grants.ProjectMember(ctx, pid, uid, projectRoleWord(role), grant, creator(ctx))
}

func (s *projectServer) AddProjectMember(ctx context.Context, req *connect.Request[avbv1.AddProjectMemberRequest]) (*connect.Response[avbv1.AddProjectMemberResponse], error) {
	m := req.Msg
	if err := s.member(ctx, m.GetProjectId(), m.GetUserId(), m.GetRole(), true); err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.AddProjectMemberResponse{Member: &avbv1.ProjectMember{UserId: m.GetUserId(), Role: m.GetRole()}}), nil
}

func (s *projectServer) RemoveProjectMember(ctx context.Context, req *connect.Request[avbv1.RemoveProjectMemberRequest]) (*connect.Response[avbv1.RemoveProjectMemberResponse], error) {
	m := req.Msg
	if err := s.member(ctx, m.GetProjectId(), m.GetUserId(), m.GetRole(), false); err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.RemoveProjectMemberResponse{}), nil
}

func (s *projectServer) ListProjectMembers(ctx context.Context, req *connect.Request[avbv1.ListProjectMembersRequest]) (*connect.Response[avbv1.ListProjectMembersResponse], error) {
	id, err := parseID(req.Msg.GetProjectId())
	if err != nil {
		return nil, err
	}
	rows, err := s.DB.ProjectMembers().List(ctx, id)
	if err != nil {
		return nil, err
	}
	res := &avbv1.ListProjectMembersResponse{}
	for _, r := range rows {
		res.Members = append(res.Members, &avbv1.ProjectMember{UserId: r.UserID.String(),
			Role: avbv1.ProjectRole(enumValue(avbv1.ProjectRole_value, "PROJECT_ROLE_", r.Role))})
	}
	return connect.NewResponse(res), nil
}
