package authn

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/google/uuid"

	"github.com/agentvoicebox/avb/platform/invalidation"
	"github.com/agentvoicebox/avb/store"
)

// Errors of tenant resolution.
var (
	ErrTenantRequired  = errors.New("no tenant: send a token with a tenant_id claim, an X-Tenant-ID header or use the tenant's subdomain")
	ErrTenantNotFound  = errors.New("tenant not found")
	ErrTenantSuspended = errors.New("tenant is suspended")
	ErrTenantPending   = errors.New("tenant is pending activation")
	ErrTenantMismatch  = errors.New("credentials belong to another tenant than the one the request names")
)

// TenantHeader names the tenant (id or slug) for callers whose credentials do not.
const TenantHeader = "X-Tenant-ID"

// TopicTenant is the invalidation topic of tenants; keys are ids and slugs.
const TopicTenant = "tenant"

// TenantSource says where a tenant reference came from.
type TenantSource int

// Sources, in precedence order.
const (
	SourceNone TenantSource = iota
	SourceClaim
	SourceHeader
	SourceSubdomain
)

// TenantRef picks the tenant reference of a request: the token's tenant_id
// claim, else the X-Tenant-ID header, else the subdomain of host under
// baseDomain ("acme.example.com" under "example.com" is "acme").
func TenantRef(claim, header, host, baseDomain string) (string, TenantSource) {
	if claim = strings.TrimSpace(claim); claim != "" {
		return claim, SourceClaim
	}
	if header = strings.TrimSpace(header); header != "" {
		return header, SourceHeader
	}
	if slug := Subdomain(host, baseDomain); slug != "" {
		return slug, SourceSubdomain
	}
	return "", SourceNone
}

// Subdomain returns the single label in front of baseDomain in host, or "".
func Subdomain(host, baseDomain string) string {
	if baseDomain == "" {
		return ""
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host, baseDomain = strings.ToLower(strings.TrimSuffix(host, ".")), strings.ToLower(baseDomain)
	label, ok := strings.CutSuffix(host, "."+baseDomain)
	if !ok || label == "" || strings.Contains(label, ".") {
		return ""
	}
	return label
}

// TenantStore reads tenants.
type TenantStore interface {
	Get(ctx context.Context, id uuid.UUID) (*store.Tenant, error)
	GetBySlug(ctx context.Context, slug string) (*store.Tenant, error)
}

// Tenants looks tenants up by id or slug, cached in process and invalidated
// on every instance when a tenant changes.
type Tenants struct {
	store TenantStore
	cache *invalidation.Cache[*store.Tenant]
	bus   *invalidation.Bus
}

// NewTenants returns a cached tenant lookup.
func NewTenants(s TenantStore, bus *invalidation.Bus, cache *invalidation.Cache[*store.Tenant]) *Tenants {
	return &Tenants{store: s, cache: cache, bus: bus}
}

// Lookup finds a tenant by id or slug. Deleted tenants are not found.
func (t *Tenants) Lookup(ctx context.Context, ref string) (*store.Tenant, error) {
	ten, err := t.cache.Fetch(ref, func() (*store.Tenant, error) {
		var ten *store.Tenant
		var err error
		if id, perr := uuid.Parse(ref); perr == nil {
			ten, err = t.store.Get(ctx, id)
		} else {
			ten, err = t.store.GetBySlug(ctx, strings.ToLower(ref))
		}
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil
		}
		return ten, err
	})
	if err != nil {
		return nil, err
	}
	if ten == nil || ten.Status == store.StatusDeleted {
		return nil, ErrTenantNotFound
	}
	return ten, nil
}

// Serving returns nil when the tenant may be served, else the reason why not.
func Serving(t *store.Tenant) error {
	switch t.Status {
	case store.StatusActive:
		return nil
	case store.StatusSuspended:
		return ErrTenantSuspended
	case store.StatusPending:
		return ErrTenantPending
	}
	return ErrTenantNotFound
}

// Matches reports whether ref names t (by id or slug).
func Matches(t *store.Tenant, ref string) bool {
	return strings.EqualFold(ref, t.ID.String()) || strings.EqualFold(ref, t.Slug)
}

// Invalidate drops t from every instance's cache.
func (t *Tenants) Invalidate(ctx context.Context, ten *store.Tenant) error {
	if err := t.bus.Publish(ctx, TopicTenant, ten.ID.String()); err != nil {
		return err
	}
	return t.bus.Publish(ctx, TopicTenant, ten.Slug)
}
