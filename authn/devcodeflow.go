package authn

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// The development issuer's authorization code flow with PKCE (RFC 7636,
// S256 only), as a browser app (the console) signs in against Keycloak: the
// authorization endpoint shows a small login form for development users,
// sends a one-time code to the app's redirect URI, and the token endpoint
// trades the code and its verifier for an access token and a refresh token.

// codeGrant is what an authorization code or a refresh token stands for.
type codeGrant struct {
	clientID, redirectURI, challenge string
	user                             Token
	sessionID                        string
	expires                          time.Time
}

// Lifetimes of the code flow's grants.
const (
	codeTTL         = time.Minute
	refreshTTL      = 12 * time.Hour
	codeAccessTTL   = 15 * time.Minute
	maxOpenGrants   = 10000 // codes and refresh tokens kept at most
	devLoginRoleSep = ","
)

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in: avb development</title></head>
<body><main>
<h1>Sign in</h1>
<p>Development sign-in: any email is a user of the tenant you name. Production signs in with Keycloak.</p>
{{if .Error}}<p role="alert">{{.Error}}</p>{{end}}
<form method="post">
{{range $k, $v := .Hidden}}<input type="hidden" name="{{$k}}" value="{{$v}}">{{end}}
<p><label for="username">Email</label> <input id="username" name="username" type="email" required autocomplete="username"></p>
<p><label for="tenant_id">Tenant id</label> <input id="tenant_id" name="tenant_id" aria-describedby="tenant_id_help"></p>
<p id="tenant_id_help">Required, except for a platform operator (sysadmin), who picks a tenant in the console.</p>
<p><label for="roles">Role</label> <select id="roles" name="roles">
<option value="admin">admin</option><option value="developer">developer</option><option value="operator">operator</option><option value="billing">billing</option><option value="viewer">viewer</option><option value="sysadmin">sysadmin (platform operator)</option>
</select></p>
<p><button id="sign-in" type="submit">Sign in</button></p>
</form></main></body></html>`))

// authParams are the authorization request's parameters the form carries.
var authParams = []string{"response_type", "client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method", "scope", "nonce"}

// checkAuthRequest validates an authorization request; "" when it is good.
func (d *DevIssuer) checkAuthRequest(q url.Values) string {
	switch {
	case q.Get("response_type") != "code":
		return "response_type must be code"
	case q.Get("client_id") == "":
		return "client_id is required"
	case !d.redirectAllowed(q.Get("redirect_uri")):
		return "redirect_uri is not registered"
	case q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) < 43:
		return "PKCE with code_challenge_method=S256 is required"
	}
	return ""
}

// redirectAllowed: the issuer's own origin, or a registered prefix.
func (d *DevIssuer) redirectAllowed(uri string) bool {
	u, err := url.Parse(uri)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" {
		return false
	}
	if own, err := url.Parse(d.issuer); err == nil && own.Scheme == u.Scheme && own.Host == u.Host {
		return true
	}
	for _, p := range d.RedirectPrefixes {
		if p != "" && strings.HasPrefix(uri, p) {
			return true
		}
	}
	return false
}

// authorizeForm shows the login form for a valid authorization request.
func (d *DevIssuer) authorizeForm(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if msg := d.checkAuthRequest(q); msg != "" {
		// Never redirect a bad request: the redirect URI may be the bad part.
		http.Error(w, "invalid authorization request: "+msg, http.StatusBadRequest)
		return
	}
	d.showLogin(w, q, "")
}

func (d *DevIssuer) showLogin(w http.ResponseWriter, q url.Values, problem string) {
	hidden := map[string]string{}
	for _, k := range authParams {
		if v := q.Get(k); v != "" {
			hidden[k] = v
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// The form posts here, and its answer redirects to the app: both are
	// form targets to the browser.
	formAction := "'self'"
	if u, err := url.Parse(q.Get("redirect_uri")); err == nil && u.Host != "" {
		formAction += " " + u.Scheme + "://" + u.Host
	}
	w.Header().Set("Content-Security-Policy", "default-src 'none'; form-action "+formAction+"; frame-ancestors 'none'")
	_ = loginPage.Execute(w, map[string]any{"Hidden": hidden, "Error": problem})
}

// authorize takes the login form and redirects with a code.
func (d *DevIssuer) authorize(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	f := r.PostForm
	if msg := d.checkAuthRequest(f); msg != "" {
		http.Error(w, "invalid authorization request: "+msg, http.StatusBadRequest)
		return
	}
	var roles []string
	for role := range strings.SplitSeq(f.Get("roles"), devLoginRoleSep) {
		if role = strings.TrimSpace(role); role != "" {
			roles = append(roles, role)
		}
	}
	if f.Get("username") == "" || (f.Get("tenant_id") == "" && !slices.Contains(roles, RoleSysadmin)) {
		w.WriteHeader(http.StatusBadRequest)
		d.showLogin(w, f, "Email and tenant id are required.")
		return
	}
	code := randomToken()
	sid := randomToken()[:32]
	d.keep(d.codes, code, &codeGrant{clientID: f.Get("client_id"), redirectURI: f.Get("redirect_uri"), challenge: f.Get("code_challenge"),
		user:      Token{Subject: "dev|" + f.Get("username"), Email: f.Get("username"), TenantID: f.Get("tenant_id"), Roles: roles},
		sessionID: sid, expires: time.Now().Add(codeTTL)})
	to, _ := url.Parse(f.Get("redirect_uri"))
	q := to.Query()
	q.Set("code", code)
	if st := f.Get("state"); st != "" {
		q.Set("state", st)
	}
	to.RawQuery = q.Encode()
	http.Redirect(w, r, to.String(), http.StatusFound)
}

// keep stores a grant, dropping expired ones (and refusing to grow past
// maxOpenGrants: the oldest-expiring make room).
func (d *DevIssuer) keep(m map[string]*codeGrant, key string, g *codeGrant) {
	d.grants.Lock()
	defer d.grants.Unlock()
	now := time.Now()
	for k, v := range m {
		if now.After(v.expires) {
			delete(m, k)
		}
	}
	for len(m) >= maxOpenGrants {
		var first string
		for k, v := range m {
			if first == "" || v.expires.Before(m[first].expires) {
				first = k
			}
		}
		delete(m, first)
	}
	m[key] = g
}

// take removes and returns a live grant.
func (d *DevIssuer) take(m map[string]*codeGrant, key string) *codeGrant {
	d.grants.Lock()
	defer d.grants.Unlock()
	g := m[key]
	delete(m, key)
	if g == nil || time.Now().After(g.expires) {
		return nil
	}
	return g
}

// exchangeCode trades a code and its PKCE verifier for tokens.
func (d *DevIssuer) exchangeCode(w http.ResponseWriter, f url.Values) {
	g := d.take(d.codes, f.Get("code"))
	if g == nil {
		tokenError(w, "invalid_grant", "the code is unknown, used or expired")
		return
	}
	sum := sha256.Sum256([]byte(f.Get("code_verifier")))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	switch {
	case f.Get("client_id") != g.clientID, f.Get("redirect_uri") != g.redirectURI:
		tokenError(w, "invalid_grant", "client_id and redirect_uri must be the authorization request's")
		return
	case subtle.ConstantTimeCompare([]byte(challenge), []byte(g.challenge)) != 1:
		tokenError(w, "invalid_grant", "code_verifier does not match the code_challenge")
		return
	}
	d.issueTokens(w, g)
}

// refreshToken trades a refresh token for new tokens (and a new refresh
// token: each is used once).
func (d *DevIssuer) refreshToken(w http.ResponseWriter, f url.Values) {
	g := d.take(d.refresh, f.Get("refresh_token"))
	if g == nil || f.Get("client_id") != g.clientID {
		tokenError(w, "invalid_grant", "the refresh token is unknown, used or expired")
		return
	}
	d.issueTokens(w, g)
}

func (d *DevIssuer) issueTokens(w http.ResponseWriter, g *codeGrant) {
	t := g.user
	t.Audience, t.TTL, t.SessionID = d.Audience, codeAccessTTL, g.sessionID
	tok, err := d.Issue(t)
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	refresh := randomToken()
	next := *g
	next.expires = time.Now().Add(refreshTTL)
	d.keep(d.refresh, refresh, &next)
	writeJSON(w, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": int(codeAccessTTL.Seconds()),
		"refresh_token": refresh, "refresh_expires_in": int(refreshTTL.Seconds()), "session_state": g.sessionID})
}

func tokenError(w http.ResponseWriter, code, description string) {
	w.WriteHeader(http.StatusBadRequest)
	writeJSON(w, map[string]string{"error": code, "error_description": description})
}

// cors lets a registered browser app call the token and logout endpoints.
func (d *DevIssuer) cors(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin == "" || !d.originAllowed(origin) {
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Methods", "POST")
	h.Set("Access-Control-Allow-Headers", "Content-Type")
	h.Add("Vary", "Origin")
}

// originAllowed: the issuer's own origin, or a registered prefix's.
func (d *DevIssuer) originAllowed(origin string) bool {
	for _, p := range append([]string{d.issuer}, d.RedirectPrefixes...) {
		if u, err := url.Parse(p); err == nil && u.Host != "" && u.Scheme+"://"+u.Host == origin {
			return true
		}
	}
	return false
}

func (d *DevIssuer) preflight(w http.ResponseWriter, r *http.Request) {
	d.cors(w, r)
	w.WriteHeader(http.StatusNoContent)
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
