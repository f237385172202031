package server

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/agentvoicebox/avb/apierror"
	"github.com/agentvoicebox/avb/authn"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/policy"
	"github.com/agentvoicebox/avb/store"
)

// NewTenantServer returns the TenantService handler.
func NewTenantServer(deps Identity) avbv1connect.TenantServiceHandler { return &tenantServer{deps} }

type tenantServer struct{ Identity }

// own returns the caller's tenant row.
func (s *tenantServer) own(ctx context.Context) (*store.Tenant, error) {
	id, err := callerTenant(ctx)
	if err != nil {
		return nil, err
	}
	return s.DB.Tenants().Get(ctx, id)
}

func (s *tenantServer) GetTenant(ctx context.Context, _ *connect.Request[avbv1.GetTenantRequest]) (*connect.Response[avbv1.GetTenantResponse], error) {
	t, err := s.own(ctx)
	if err != nil {
		return nil, err
	}
	perms, err := s.permissions(ctx)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.GetTenantResponse{Tenant: tenantToProto(t), Permissions: perms}), nil
}

// tenantPermissions are the permissions GetTenant reports, weakest first.
var tenantPermissions = []string{"view", "operate", "develop", "administrate", "billing_access"}

// permissions lists the tenant permissions the caller holds.
func (s *tenantServer) permissions(ctx context.Context) ([]string, error) {
	p := authn.PrincipalFrom(ctx)
	if s.Decider == nil || p == nil {
		return nil, nil
	}
	var held []string
	for _, perm := range tenantPermissions {
		ok, err := s.Decider.Allowed(ctx, p, policy.Rule{Kind: policy.Permission, ResourceType: "tenant", Permission: perm}, "")
		if err != nil {
			return nil, apierror.New(connect.CodeUnavailable, avbv1.ErrorReason_ERROR_REASON_DEPENDENCY_UNAVAILABLE,
				"authorization is unavailable; retry")
		}
		if ok {
			held = append(held, perm)
		}
	}
	return held, nil
}

func (s *tenantServer) UpdateTenantSettings(ctx context.Context, req *connect.Request[avbv1.UpdateTenantSettingsRequest]) (*connect.Response[avbv1.UpdateTenantSettingsResponse], error) {
	t, err := s.own(ctx)
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
	t, err = s.DB.Tenants().UpdateSettings(ctx, t.ID, raw)
	if err != nil {
		return nil, err
	}
	if err := s.Tenants.Invalidate(ctx, t); err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.UpdateTenantSettingsResponse{Tenant: tenantToProto(t)}), nil
}
