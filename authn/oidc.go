package authn

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/agentvoicebox/avb/platform/dependency"
)

// Errors of token verification.
var (
	ErrTokenExpired = errors.New("token expired")
	ErrInvalidToken = errors.New("invalid token")
	// ErrIssuerUnavailable: discovery or JWKS could not be fetched; retry.
	ErrIssuerUnavailable = errors.New("identity provider unavailable")
)

// Claims are the Keycloak-shaped claims the platform reads.
type Claims struct {
	Subject    string `json:"sub"`
	Email      string `json:"email"`
	GivenName  string `json:"given_name"`
	FamilyName string `json:"family_name"`
	TenantID   string `json:"tenant_id"`
	// SessionID is the identity provider's session (Keycloak's sid).
	SessionID   string `json:"sid"`
	Expiry      int64  `json:"exp"`
	RealmAccess struct {
		Roles []string `json:"roles"`
	} `json:"realm_access"`
}

// OIDC verifies bearer tokens of one issuer. Discovery runs on first use
// (and again after a failure), so the server starts even while the
// identity provider is down; go-oidc caches the JWKS and refetches it when a
// token names an unknown key, which handles key rotation.
type OIDC struct {
	issuer   string
	audience string
	client   *http.Client

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier
}

// NewOIDC returns a verifier for tokens of issuer with audience. client
// fetches discovery and keys (nil: one with a 5 s timeout); give it a
// deadline, since a request waits on the fetch.
func NewOIDC(issuer, audience string, client *http.Client) *OIDC {
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	return &OIDC{issuer: issuer, audience: audience, client: client}
}

func (o *OIDC) getVerifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.verifier != nil {
		return o.verifier, nil
	}
	// The provider keeps this context for JWKS refreshes: it must outlive the request.
	pctx := oidc.ClientContext(context.WithoutCancel(ctx), o.client)
	provider, err := oidc.NewProvider(pctx, o.issuer)
	if err != nil {
		return nil, fmt.Errorf("%w: discovery at %s: %v", ErrIssuerUnavailable, o.issuer, err)
	}
	o.verifier = provider.VerifierContext(pctx, &oidc.Config{ClientID: o.audience})
	return o.verifier, nil
}

// Verify checks a raw JWT and returns its claims.
func (o *OIDC) Verify(ctx context.Context, raw string) (*Claims, error) {
	v, err := o.getVerifier(ctx)
	if err != nil {
		return nil, err
	}
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		var expired *oidc.TokenExpiredError
		if errors.As(err, &expired) {
			return nil, ErrTokenExpired
		}
		if errors.Is(err, dependency.ErrUnavailable) || strings.Contains(err.Error(), "fetching keys") {
			// The token names a key we do not have and the issuer's
			// JWKS could not be fetched: not the token's fault.
			return nil, fmt.Errorf("%w: signing keys: %v", ErrIssuerUnavailable, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	var c Claims
	if err := tok.Claims(&c); err != nil || c.Subject == "" {
		return nil, fmt.Errorf("%w: claims: %v", ErrInvalidToken, err)
	}
	return &c, nil
}
