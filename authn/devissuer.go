package authn

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// DevIssuer is a small OpenID Connect provider for development and tests. It
// serves discovery, JWKS and a token endpoint at Keycloak's paths and signs
// Keycloak-shaped tokens (RS256), so the real go-oidc verification path runs
// everywhere. It never runs in the prod profile. Its token endpoint issues a
// token for whatever user the form names: it is not an identity provider.
type DevIssuer struct {
	issuer string
	// BackchannelLogoutURL receives a logout token when a session logs out
	// at the logout endpoint (Keycloak's back-channel logout).
	BackchannelLogoutURL string

	// RedirectPrefixes are where the authorization endpoint may send a
	// code (a redirect_uri must start with one); the issuer's own origin
	// is always allowed. Their origins may call the token endpoint from a
	// browser (CORS).
	RedirectPrefixes []string
	// Audience is the aud of the tokens the code flow issues ("avb-api").
	Audience string

	mu   sync.RWMutex
	keys []jose.JSONWebKey // keys[0] signs; older ones stay published after Rotate

	grants sync.Mutex
	codes  map[string]*codeGrant // authorization codes, one use each
	// refresh tokens, by token
	refresh map[string]*codeGrant
}

// NewDevIssuer returns an issuer whose tokens say iss = issuerURL.
func NewDevIssuer(issuerURL string) (*DevIssuer, error) {
	d := &DevIssuer{issuer: strings.TrimSuffix(issuerURL, "/"), Audience: "avb-api",
		codes: map[string]*codeGrant{}, refresh: map[string]*codeGrant{}}
	if err := d.Rotate(); err != nil {
		return nil, err
	}
	return d, nil
}

// Issuer is the issuer URL.
func (d *DevIssuer) Issuer() string { return d.issuer }

// Rotate makes a new signing key; the old ones stay in the JWKS so tokens
// they signed keep verifying.
func (d *DevIssuer) Rotate() error {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generate signing key: %w", err)
	}
	kid := make([]byte, 8)
	_, _ = rand.Read(kid)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.keys = append([]jose.JSONWebKey{{Key: priv, KeyID: hex.EncodeToString(kid), Algorithm: "RS256", Use: "sig"}}, d.keys...)
	return nil
}

// Token describes a token to issue.
type Token struct {
	Subject    string
	Email      string
	GivenName  string
	FamilyName string
	TenantID   string // empty leaves the claim out
	Roles      []string
	Audience   string
	TTL        time.Duration // default 1 hour; negative issues an expired token
	Issuer     string        // override, for tests of wrong issuers
	SessionID  string        // the sid claim (empty leaves it out)
}

// Issue signs a token.
func (d *DevIssuer) Issue(t Token) (string, error) {
	if t.TTL == 0 {
		t.TTL = time.Hour
	}
	if t.Issuer == "" {
		t.Issuer = d.issuer
	}
	now := time.Now()
	claims := map[string]any{
		"iss": t.Issuer, "sub": t.Subject, "aud": t.Audience, "azp": t.Audience, "typ": "Bearer",
		"iat": now.Unix(), "exp": now.Add(t.TTL).Unix(), "email": t.Email, "email_verified": true,
		"given_name": t.GivenName, "family_name": t.FamilyName,
		"preferred_username": t.Email, "realm_access": map[string]any{"roles": nonNil(t.Roles)},
	}
	if t.TenantID != "" {
		claims["tenant_id"] = t.TenantID
	}
	if t.SessionID != "" {
		claims["sid"] = t.SessionID
	}
	return d.sign(claims)
}

// sign signs claims with the current key.
func (d *DevIssuer) sign(claims map[string]any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	d.mu.RLock()
	key := d.keys[0]
	d.mu.RUnlock()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("create signer: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return jws.CompactSerialize()
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// LogoutToken signs a back-channel logout token for a session (sid) or,
// with sid empty, for every session of a subject.
func (d *DevIssuer) LogoutToken(sid, subject, audience string) (string, error) {
	jti := make([]byte, 12)
	_, _ = rand.Read(jti)
	now := time.Now()
	claims := map[string]any{"iss": d.issuer, "aud": audience, "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(),
		"jti": hex.EncodeToString(jti), "events": map[string]any{backchannelLogoutEvent: map[string]any{}}}
	if sid != "" {
		claims["sid"] = sid
	}
	if subject != "" {
		claims["sub"] = subject
	}
	return d.sign(claims)
}

// SendLogout posts a logout token to a relying party's back-channel logout
// URL, as Keycloak does when a session ends.
func (d *DevIssuer) SendLogout(ctx context.Context, rpURL, sid, subject, audience string) error {
	tok, err := d.LogoutToken(sid, subject, audience)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rpURL, strings.NewReader(url.Values{"logout_token": {tok}}.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("back-channel logout at %s: %s", rpURL, res.Status)
	}
	return nil
}

// Handler serves the issuer's endpoints. Mount it at the issuer URL's path.
func (d *DevIssuer) Handler() http.Handler {
	u, _ := url.Parse(d.issuer)
	base := strings.TrimSuffix(u.Path, "/")
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+base+"/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*") // a public document browser apps read
		writeJSON(w, map[string]any{
			"issuer":                                d.issuer,
			"jwks_uri":                              d.issuer + "/protocol/openid-connect/certs",
			"token_endpoint":                        d.issuer + "/protocol/openid-connect/token",
			"authorization_endpoint":                d.issuer + "/protocol/openid-connect/auth",
			"response_types_supported":              []string{"code"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
			"grant_types_supported":                 []string{"password", "authorization_code", "refresh_token"},
			"code_challenge_methods_supported":      []string{"S256"},
			"end_session_endpoint":                  d.issuer + "/protocol/openid-connect/logout",
		})
	})
	mux.HandleFunc("GET "+base+"/protocol/openid-connect/auth", d.authorizeForm)
	mux.HandleFunc("POST "+base+"/protocol/openid-connect/auth", d.authorize)
	mux.HandleFunc("OPTIONS "+base+"/protocol/openid-connect/token", d.preflight)
	mux.HandleFunc("OPTIONS "+base+"/protocol/openid-connect/logout", d.preflight)
	mux.HandleFunc("GET "+base+"/protocol/openid-connect/certs", func(w http.ResponseWriter, _ *http.Request) {
		d.mu.RLock()
		set := jose.JSONWebKeySet{}
		for _, k := range d.keys {
			set.Keys = append(set.Keys, k.Public())
		}
		d.mu.RUnlock()
		writeJSON(w, set)
	})
	mux.HandleFunc("POST "+base+"/protocol/openid-connect/token", d.token)
	mux.HandleFunc("POST "+base+"/protocol/openid-connect/logout", d.logout)
	return mux
}

// token implements a development password grant: username (an email),
// tenant_id, roles (comma-separated) and client_id (the audience) name the
// token to issue. The password is ignored.
func (d *DevIssuer) token(w http.ResponseWriter, r *http.Request) {
	d.cors(w, r)
	if err := r.ParseForm(); err == nil {
		switch r.PostForm.Get("grant_type") {
		case "authorization_code":
			d.exchangeCode(w, r.PostForm)
			return
		case "refresh_token":
			d.refreshToken(w, r.PostForm)
			return
		}
	}
	if r.PostForm.Get("grant_type") != "password" || r.PostForm.Get("username") == "" {
		w.WriteHeader(http.StatusBadRequest)
		writeJSON(w, map[string]string{"error": "invalid_request", "error_description": "grant_type=password and username are required"})
		return
	}
	f := r.PostForm
	var roles []string
	for role := range strings.SplitSeq(f.Get("roles"), ",") {
		if role = strings.TrimSpace(role); role != "" {
			roles = append(roles, role)
		}
	}
	aud := f.Get("client_id")
	if aud == "" {
		aud = "avb-api"
	}
	ttl := time.Hour
	sid := make([]byte, 16)
	_, _ = rand.Read(sid)
	tok, err := d.Issue(Token{Subject: "dev|" + f.Get("username"), Email: f.Get("username"), TenantID: f.Get("tenant_id"),
		Roles: roles, Audience: aud, TTL: ttl, GivenName: f.Get("given_name"), FamilyName: f.Get("family_name"),
		SessionID: hex.EncodeToString(sid)})
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	writeJSON(w, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": int(ttl.Seconds()),
		"session_state": hex.EncodeToString(sid)})
}

// logout ends a development session: sid (or sub, for all of a user's)
// and client_id (the audience) name it. The relying party hears of it
// through its back-channel logout URL, as from Keycloak.
func (d *DevIssuer) logout(w http.ResponseWriter, r *http.Request) {
	d.cors(w, r)
	if err := r.ParseForm(); err == nil && r.PostForm.Get("refresh_token") != "" {
		// A browser app ends its session with its refresh token, as with
		// Keycloak's logout endpoint.
		g := d.take(d.refresh, r.PostForm.Get("refresh_token"))
		if g == nil {
			tokenError(w, "invalid_grant", "the refresh token is unknown, used or expired")
			return
		}
		r.PostForm.Set("sid", g.sessionID)
		r.PostForm.Set("client_id", d.Audience)
	}
	if r.PostForm.Get("sid") == "" && r.PostForm.Get("sub") == "" {
		w.WriteHeader(http.StatusBadRequest)
		writeJSON(w, map[string]string{"error": "invalid_request", "error_description": "sid or sub is required"})
		return
	}
	if d.BackchannelLogoutURL == "" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	aud := r.PostForm.Get("client_id")
	if aud == "" {
		aud = "avb-api"
	}
	if err := d.SendLogout(r.Context(), d.BackchannelLogoutURL, r.PostForm.Get("sid"), r.PostForm.Get("sub"), aud); err != nil {
		w.WriteHeader(http.StatusBadGateway)
		writeJSON(w, map[string]string{"error": "backchannel_logout_failed", "error_description": err.Error()})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}
