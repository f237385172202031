package authn

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/agentvoicebox/avb/platform/invalidation"
	"github.com/agentvoicebox/avb/platform/logging"
	"github.com/agentvoicebox/avb/policy"
	"github.com/agentvoicebox/avb/server/middleware"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

// clientTokenProcedures are the RPCs a browser client token may call.
var clientTokenProcedures = map[string]bool{
	"/avb.v1.VoiceService/Converse":       true,
	"/avb.v1.VoiceService/ConverseEvents": true,
	"/avb.v1.VoiceService/SendAudio":      true,
	"/avb.v1.VoiceService/SendControl":    true,
}

func clientTokenMay(procedure string) bool { return clientTokenProcedures[procedure] }

// Errors of authentication.
var (
	// ErrClientTokenScope: client tokens run voice sessions only.
	ErrClientTokenScope = errors.New("client tokens may only run voice sessions")
	ErrUnauthenticated  = errors.New("credentials required: send Authorization: Bearer <token> or X-API-Key: avb_...")
	ErrUserInactive     = errors.New("user is deactivated")
	ErrLoggedOut        = errors.New("the token's session was ended by a logout: sign in again")
	// ErrNoPolicy: the RPC declares no access policy, so it is refused.
	ErrNoPolicy = errors.New("rpc declares no access policy")
)

// UserStore records users from their tokens.
type UserStore interface {
	Upsert(ctx context.Context, u *store.User) (*store.User, error)
	GetBySubject(ctx context.Context, subject string) (*store.User, error)
}

// TopicUser is the invalidation topic of users; keys are token subjects.
const TopicUser = "user"

// Authenticator is the Connect interceptor that establishes who calls and
// for which tenant, once per request, before anything else looks at it.
type Authenticator struct {
	OIDC *OIDC
	Keys *APIKeys
	// Usage, when set, counts every authenticated use of an API key; the
	// server leaves it unset and counts what its rate limits admit.
	Usage     *Usage
	Tenants   *Tenants
	Users     UserStore
	UserCache *invalidation.Cache[*store.User]
	// Sessions, when set, records each user's login (the first request of
	// a token session) and refuses tokens of sessions logged out.
	Sessions   *TokenSessions
	BaseDomain string
	// ClientTokens verifies browser client tokens.
	ClientTokens *ClientTokens
	// IdPRoles maps a token's realm roles to the tenant roles they grant.
	IdPRoles func(tokenRoles []string) []string
	// SyncRoles applies a token's roles when they differ from the user's
	// applied ones (u.IdPRoles): a user's first request, and any request
	// after the identity provider changed their roles or after an earlier
	// sync failed. It returns the ZedToken of its writes, which this
	// request's checks then use.
	SyncRoles func(ctx context.Context, u *store.User, tokenRoles []string) (string, error)
}

// Interceptor returns the Connect interceptor.
func (a *Authenticator) Interceptor() connect.Interceptor { return interceptor{a} }

type interceptor struct{ a *Authenticator }

func (i interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		ctx, err := i.a.Authenticate(ctx, req.Spec().Procedure, req.Header())
		if err != nil {
			return nil, apiError(err)
		}
		return next(ctx, req)
	}
}

func (i interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, err := i.a.Authenticate(ctx, conn.Spec().Procedure, conn.RequestHeader())
		if err != nil {
			return apiError(err) // before any message is read
		}
		return next(ctx, conn)
	}
}

// Authenticate resolves the caller and tenant of one request and returns the
// context carrying them.
func (a *Authenticator) Authenticate(ctx context.Context, procedure string, h http.Header) (context.Context, error) {
	rule := policy.For(procedure)
	switch rule.Kind {
	case policy.Public:
		return ctx, nil
	case policy.Missing:
		return nil, ErrNoPolicy
	}
	p, claimTenant, err := a.credentials(ctx, h)
	if err != nil {
		return nil, err
	}
	if rule.NeedsTenant() {
		if err := a.resolveTenant(ctx, p, claimTenant, h); err != nil {
			return nil, err
		}
	}
	if p.TenantID != uuid.Nil {
		ctx = tenancy.With(ctx, p.TenantID)
		if p.Kind == KindClientToken && !clientTokenMay(procedure) {
			return nil, ErrClientTokenScope
		}
		if p.Kind == KindUser {
			if err := a.recordUser(ctx, p, claimTenant != ""); err != nil {
				return nil, err
			}
			if a.Sessions != nil && p.UserID != uuid.Nil {
				if err := a.Sessions.Check(ctx, p, h); err != nil {
					return nil, err
				}
			}
		}
	}
	if f := logging.FieldsFrom(ctx); f != nil {
		if p.TenantID != uuid.Nil {
			f.SetTenant(p.TenantID.String())
		}
		f.SetUser(p.Subject)
	}
	if p.Kind == KindAPIKey && a.Usage != nil {
		a.Usage.Record(p.APIKeyID, middleware.ClientIP(ctx))
	}
	return WithPrincipal(ctx, p), nil
}

// credentials verifies the API key or bearer token of the request.
func (a *Authenticator) credentials(ctx context.Context, h http.Header) (*Principal, string, error) {
	key := strings.TrimSpace(h.Get("X-API-Key"))
	bearer, hasBearer := strings.CutPrefix(h.Get("Authorization"), "Bearer ")
	bearer = strings.TrimSpace(bearer)
	if key == "" && hasBearer && strings.HasPrefix(bearer, APIKeyPrefix) {
		key, bearer, hasBearer = bearer, "", false
	}
	switch {
	case key == "" && strings.HasPrefix(bearer, ClientTokenPrefix) && a.ClientTokens != nil:
		cl, err := a.ClientTokens.Verify(bearer)
		if err != nil {
			return nil, "", err
		}
		p := &Principal{Kind: KindClientToken, TenantID: cl.Tenant, Scopes: []string{"realtime"}}
		if cl.APIKey != nil {
			p.APIKeyID, p.Subject = *cl.APIKey, "clienttoken:apikey:"+cl.APIKey.String()
		}
		if cl.User != nil {
			p.UserID, p.Subject = *cl.User, "clienttoken:user:"+cl.User.String()
		}
		if cl.Session != nil {
			p.SessionID = *cl.Session
		}
		return p, "", nil
	case key != "":
		k, err := a.Keys.Verify(ctx, key)
		if err != nil {
			return nil, "", err
		}
		p := &Principal{Kind: KindAPIKey, Subject: "apikey:" + k.ID.String(), APIKeyID: k.ID,
			Scopes: k.Scopes, RateLimitTier: k.RateLimitTier, TenantID: k.TenantID}
		if k.CreatedBy != nil {
			p.UserID = *k.CreatedBy
		}
		return p, "", nil
	case hasBearer && bearer != "":
		c, err := a.OIDC.Verify(ctx, bearer)
		if err != nil {
			return nil, "", err
		}
		return &Principal{Kind: KindUser, Subject: c.Subject, Email: c.Email, FirstName: c.GivenName,
			LastName: c.FamilyName, Roles: c.RealmAccess.Roles, TokenSession: sessionKey(c.SessionID, bearer),
			TokenExpiry: time.Unix(c.Expiry, 0)}, c.TenantID, nil
	}
	return nil, "", ErrUnauthenticated
}

// resolveTenant sets p.TenantID from the credentials and the request, and
// checks the tenant may be served.
func (a *Authenticator) resolveTenant(ctx context.Context, p *Principal, claim string, h http.Header) error {
	named, source := TenantRef("", h.Get(TenantHeader), middleware.Host(ctx), a.BaseDomain)
	var ref string
	switch {
	case p.Kind == KindAPIKey || p.Kind == KindClientToken:
		ref = p.TenantID.String() // keys and client tokens carry their own tenant
	case claim != "":
		ref = claim
	default:
		ref = named
	}
	if ref == "" {
		return ErrTenantRequired
	}
	t, err := a.Tenants.Lookup(ctx, ref)
	if err != nil {
		return err
	}
	if source != SourceNone && !Matches(t, named) {
		return ErrTenantMismatch
	}
	if err := Serving(t); err != nil {
		return err
	}
	p.TenantID, p.TenantTier, p.AuthzToken = t.ID, t.Tier, t.AuthzToken
	return nil
}

// recordUser creates or refreshes the user row (cached), and refuses
// deactivated users. A user named into a tenant by header or subdomain
// (rather than by their token's claim) must already belong to it.
func (a *Authenticator) recordUser(ctx context.Context, p *Principal, fromClaim bool) error {
	if !fromClaim && p.IsSysadmin() {
		return nil // operators act in any tenant without becoming its user
	}
	cacheKey := p.Subject
	u, err := a.UserCache.Fetch(cacheKey, func() (*store.User, error) {
		if !fromClaim {
			u, err := a.Users.GetBySubject(ctx, p.Subject)
			if errors.Is(err, store.ErrNotFound) {
				return nil, ErrTenantMismatch
			}
			return u, err
		}
		return a.Users.Upsert(ctx, &store.User{Subject: p.Subject, Email: p.Email,
			FirstName: p.FirstName, LastName: p.LastName, Roles: p.Roles})
	})
	if err != nil {
		return err
	}
	if u.TenantID != p.TenantID {
		return ErrTenantMismatch
	}
	if !u.IsActive {
		return ErrUserInactive
	}
	if fromClaim && a.SyncRoles != nil && !slices.Equal(a.IdPRoles(p.Roles), u.IdPRoles) {
		// Until this succeeds the user keeps the roles applied before, and
		// every request tries again: an outage never strands a user
		// without the roles their token grants (nor with ones it lost).
		token, err := a.SyncRoles(ctx, u, p.Roles)
		if err != nil {
			return err
		}
		if token != "" {
			p.AuthzToken = token
		}
		a.UserCache.Forget(cacheKey)
	}
	p.UserID = u.ID
	return nil
}
