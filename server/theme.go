package server

import (
	"context"

	"connectrpc.com/connect"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/store"
)

// NewThemeServer returns the ThemeService handler.
func NewThemeServer(deps Identity) avbv1connect.ThemeServiceHandler {
	return &themeServer{named[*avbv1.Theme]{Identity: deps, kind: store.Themes, objType: "theme",
		field: "theme", new: func() *avbv1.Theme { return &avbv1.Theme{} }}}
}

type themeServer struct{ named[*avbv1.Theme] }

func (s *themeServer) CreateTheme(ctx context.Context, req *connect.Request[avbv1.CreateThemeRequest]) (*connect.Response[avbv1.CreateThemeResponse], error) {
	p, err := s.create(ctx, req.Msg.GetRequestId(), req.Msg.GetTheme())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.CreateThemeResponse{Theme: p}), nil
}

func (s *themeServer) GetTheme(ctx context.Context, req *connect.Request[avbv1.GetThemeRequest]) (*connect.Response[avbv1.GetThemeResponse], error) {
	p, err := s.get(ctx, req.Msg.GetThemeId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.GetThemeResponse{Theme: p}), nil
}

func (s *themeServer) ListThemes(ctx context.Context, req *connect.Request[avbv1.ListThemesRequest]) (*connect.Response[avbv1.ListThemesResponse], error) {
	m := req.Msg
	items, next, err := s.list(ctx, listParams{pageSize: m.GetPageSize(), pageToken: m.GetPageToken(),
		nameContains: m.GetNameContains(), order: m.GetOrderBy()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.ListThemesResponse{Themes: items, NextPageToken: next}), nil
}

func (s *themeServer) UpdateTheme(ctx context.Context, req *connect.Request[avbv1.UpdateThemeRequest]) (*connect.Response[avbv1.UpdateThemeResponse], error) {
	p, err := s.update(ctx, req.Msg.GetThemeId(), req.Msg.GetTheme(), req.Msg.GetUpdateMask())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.UpdateThemeResponse{Theme: p}), nil
}

func (s *themeServer) DeleteTheme(ctx context.Context, req *connect.Request[avbv1.DeleteThemeRequest]) (*connect.Response[avbv1.DeleteThemeResponse], error) {
	if err := s.delete(ctx, req.Msg.GetThemeId()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.DeleteThemeResponse{}), nil
}
