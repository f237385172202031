package server

import (
	"context"

	"connectrpc.com/connect"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/store"
)

// NewAdminServer returns the AdminService handler (platform sysadmins).
func NewAdminServer(deps Identity) avbv1connect.AdminServiceHandler { return &adminServer{deps} }

type adminServer struct{ Identity }

// limitsOf reads limits from the API (nil: none given).
func limitsOf(l *avbv1.TenantLimits) store.Limits {
	if l == nil {
		return store.Limits{}
	}
	return store.Limits{MaxUsers: int(l.GetMaxUsers()), MaxProjects: int(l.GetMaxProjects()),
		MaxAPIKeys: int(l.GetMaxApiKeys()), MaxSessionsPerMonth: int(l.GetMaxSessionsPerMonth())}
}

func (s *adminServer) CreateTenant(ctx context.Context, req *connect.Request[avbv1.CreateTenantRequest]) (*connect.Response[avbv1.CreateTenantResponse], error) {
	m := req.Msg
	t := &store.Tenant{Name: m.GetName(), Slug: m.GetSlug(), Tier: tierWord(m.GetTier()), BillingID: m.GetBillingId()}
	t.Limits = limitsOf(m.GetLimits())
	if err := s.DB.Tenants().Create(ctx, t); err != nil {
		return nil, err
	}
	if err := s.Grants.TenantCreated(ctx, t); err != nil {
		return nil, err
	}
	if s.BillingChanged != nil {
		s.BillingChanged(ctx, t.ID)
	}
	return connect.NewResponse(&avbv1.CreateTenantResponse{Tenant: tenantToProto(t)}), nil
}

var tenantOrders = map[avbv1.TenantOrder]store.TenantOrder{
	avbv1.TenantOrder_TENANT_ORDER_UNSPECIFIED:      store.TenantsNewestFirst,
	avbv1.TenantOrder_TENANT_ORDER_CREATE_TIME_DESC: store.TenantsNewestFirst,
	avbv1.TenantOrder_TENANT_ORDER_CREATE_TIME_ASC:  store.TenantsOldestFirst,
	avbv1.TenantOrder_TENANT_ORDER_NAME_ASC:         store.TenantsByName,
	avbv1.TenantOrder_TENANT_ORDER_SLUG_ASC:         store.TenantsBySlug,
}

func (s *adminServer) ListTenants(ctx context.Context, req *connect.Request[avbv1.ListTenantsRequest]) (*connect.Response[avbv1.ListTenantsResponse], error) {
	m := req.Msg
	f := store.TenantFilter{Status: statusWord(m.GetStatus()), Tier: tierWord(m.GetTier()), Query: m.GetQuery(), Order: tenantOrders[m.GetOrderBy()]}
	rows, next, err := s.DB.Tenants().List(ctx, f, store.PageSize(m.GetPageSize()), m.GetPageToken())
	if err != nil {
		return nil, err
	}
	res := &avbv1.ListTenantsResponse{NextPageToken: next}
	for i := range rows {
		res.Tenants = append(res.Tenants, tenantToProto(&rows[i]))
	}
	return connect.NewResponse(res), nil
}

func (s *adminServer) GetTenantById(ctx context.Context, req *connect.Request[avbv1.GetTenantByIdRequest]) (*connect.Response[avbv1.GetTenantByIdResponse], error) {
	id, err := parseID(req.Msg.GetTenantId())
	if err != nil {
		return nil, err
	}
	t, err := s.DB.Tenants().Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.GetTenantByIdResponse{Tenant: tenantToProto(t)}), nil
}

// setStatus changes a tenant's status and makes every instance forget the
// old one before answering, so the change holds everywhere within a second.
func (s *adminServer) setStatus(ctx context.Context, rawID, status, reason string) (*avbv1.Tenant, error) {
	id, err := parseID(rawID)
	if err != nil {
		return nil, err
	}
	t, err := s.DB.Tenants().SetStatus(ctx, id, status, reason)
	if err != nil {
		return nil, err
	}
	if err := s.changed(ctx, t, status == store.StatusDeleted); err != nil {
		return nil, err
	}
	return tenantToProto(t), nil
}

// changed makes every instance forget the tenant's old row before the
// answer and, when its billing is affected, brings its billing account up
// to date in the background.
func (s *adminServer) changed(ctx context.Context, t *store.Tenant, billing bool) error {
	if err := s.Tenants.Invalidate(ctx, t); err != nil {
		return err
	}
	if billing && s.BillingChanged != nil {
		s.BillingChanged(ctx, t.ID)
	}
	return nil
}

func (s *adminServer) SuspendTenant(ctx context.Context, req *connect.Request[avbv1.SuspendTenantRequest]) (*connect.Response[avbv1.SuspendTenantResponse], error) {
	t, err := s.setStatus(ctx, req.Msg.GetTenantId(), store.StatusSuspended, req.Msg.GetReason())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.SuspendTenantResponse{Tenant: t}), nil
}

func (s *adminServer) ActivateTenant(ctx context.Context, req *connect.Request[avbv1.ActivateTenantRequest]) (*connect.Response[avbv1.ActivateTenantResponse], error) {
	t, err := s.setStatus(ctx, req.Msg.GetTenantId(), store.StatusActive, "")
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.ActivateTenantResponse{Tenant: t}), nil
}

func (s *adminServer) DeleteTenant(ctx context.Context, req *connect.Request[avbv1.DeleteTenantRequest]) (*connect.Response[avbv1.DeleteTenantResponse], error) {
	t, err := s.setStatus(ctx, req.Msg.GetTenantId(), store.StatusDeleted, "")
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.DeleteTenantResponse{Tenant: t}), nil
}

// ChangeTenantTier moves the tenant to another tier; every instance forgets
// the old one before the answer, and its billing subscription follows in the
// background.
func (s *adminServer) ChangeTenantTier(ctx context.Context, req *connect.Request[avbv1.ChangeTenantTierRequest]) (*connect.Response[avbv1.ChangeTenantTierResponse], error) {
	id, err := parseID(req.Msg.GetTenantId())
	if err != nil {
		return nil, err
	}
	t, err := s.DB.Tenants().ChangeTier(ctx, id, tierWord(req.Msg.GetTier()), limitsOf(req.Msg.GetLimits()))
	if err != nil {
		return nil, err
	}
	if err := s.changed(ctx, t, true); err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.ChangeTenantTierResponse{Tenant: tenantToProto(t)}), nil
}
