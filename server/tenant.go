package server

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
)

// NewTenantServer returns the TenantService handler.
func NewTenantServer(deps Identity) avbv1connect.TenantServiceHandler { return &tenantServer{deps} }

type tenantServer struct{ Identity }

func (s *tenantServer) GetTenant(ctx context.Context, _ *connect.Request[avbv1.GetTenantRequest]) (*connect.Response[avbv1.GetTenantResponse], error) {
	id, err := callerTenant(ctx)
	if err != nil {
		return nil, err
	}
	t, err := s.DB.Tenants().Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.GetTenantResponse{Tenant: tenantToProto(t)}), nil
}

func (s *tenantServer) UpdateTenantSettings(ctx context.Context, req *connect.Request[avbv1.UpdateTenantSettingsRequest]) (*connect.Response[avbv1.UpdateTenantSettingsResponse], error) {
	id, err := callerTenant(ctx)
	if err != nil {
		return nil, err
	}
	t, err := s.DB.Tenants().Get(ctx, id)
	if err != nil {
		return nil, err
	}
	settings := settingsFromJSON(t.Settings)
	if err := applyMask(settings, req.Msg.GetSettings(), req.Msg.GetUpdateMask().GetPaths()); err != nil {
		return nil, invalidArgument(err.Error())
	}
	raw, err := protojson.Marshal(settings)
	if err != nil {
		return nil, err
	}
	t, err = s.DB.Tenants().UpdateSettings(ctx, id, raw)
	if err != nil {
		return nil, err
	}
	if err := s.Tenants.Invalidate(ctx, t); err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.UpdateTenantSettingsResponse{Tenant: tenantToProto(t)}), nil
}
