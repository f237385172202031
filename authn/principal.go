// Package authn decides who is calling and for which tenant: it verifies
// OIDC bearer tokens (go-oidc, JWKS cached, rotation handled) and API keys
// (hash lookup, cached, usage aggregated), resolves the tenant, records the
// user, and puts a Principal and the tenant into the request context. It also
// holds the development OIDC issuer.
package authn

import (
	"context"
	"slices"
	"time"

	"github.com/google/uuid"
)

// Kind is the kind of caller.
type Kind int

// Kinds of callers.
const (
	KindUser Kind = iota + 1
	KindAPIKey
	// KindClientToken is a browser holding a short-lived client token; it
	// acts as the API key or user that minted it, for voice sessions only.
	KindClientToken
)

// Principal is the authenticated caller.
type Principal struct {
	Kind Kind
	// Subject is the token's sub (users) or the key id (API keys).
	Subject string
	// UserID is the user row's id (users), or the key's creator if known.
	UserID    uuid.UUID
	Email     string
	FirstName string
	LastName  string
	// Roles are realm roles from the token (users).
	Roles []string
	// APIKeyID, Scopes and RateLimitTier describe an API key.
	APIKeyID      uuid.UUID
	Scopes        []string
	RateLimitTier string
	// TenantID is the tenant the request acts for (uuid.Nil for platform RPCs without one).
	TenantID uuid.UUID
	// TenantTier is that tenant's tier (its keys' rate limits have a ceiling by tier).
	TenantTier string
	// SessionID limits a client token to one session (uuid.Nil: any).
	SessionID uuid.UUID
	// TokenSession names a user's session at the identity provider (its
	// sid, or the token's hash when it has none); TokenExpiry is when the
	// token expires.
	TokenSession string
	TokenExpiry  time.Time
	// AuthzToken is the ZedToken of the tenant's newest authorization write:
	// permission checks are at least as fresh as it.
	AuthzToken string
}

// RoleSysadmin is the realm role of platform operators.
const RoleSysadmin = "sysadmin"

// IsSysadmin reports whether the caller is a platform sysadmin.
func (p *Principal) IsSysadmin() bool {
	return p.Kind == KindUser && slices.Contains(p.Roles, RoleSysadmin)
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the caller in ctx, or nil for public RPCs.
func PrincipalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}
