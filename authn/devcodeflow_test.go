package authn_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/agentvoicebox/avb/authn"
)

// The development issuer's code flow with PKCE, as the console runs it: the
// form's code is traded once, with the right verifier, for a token go-oidc
// verifies and a refresh token that renews it; everything else is refused.
func TestDevIssuerCodeFlowWithPKCE(t *testing.T) {
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	iss, err := authn.NewDevIssuer(srv.URL + "/realms/avb")
	if err != nil {
		t.Fatal(err)
	}
	iss.RedirectPrefixes = []string{"http://app.test/console/"}
	mux.Handle("/", iss.Handler())
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	verifier := strings.Repeat("v", 50)
	sum := sha256.Sum256([]byte(verifier))
	auth := url.Values{"response_type": {"code"}, "client_id": {"avb-console"}, "redirect_uri": {"http://app.test/console/"},
		"state": {"s1"}, "code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}
	endpoint := iss.Issuer() + "/protocol/openid-connect/auth"
	res, err := client.Get(endpoint + "?" + auth.Encode())
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(page), `name="code_challenge"`) || !strings.Contains(string(page), `<label for="username">`) {
		t.Fatalf("login form: %d\n%s", res.StatusCode, page)
	}
	// Requests that could leak a code are refused, never redirected.
	for name, bad := range map[string]url.Values{"unregistered redirect": {"redirect_uri": {"http://evil.test/"}},
		"no PKCE": {"code_challenge": {""}}, "plain PKCE": {"code_challenge_method": {"plain"}}} {
		q := url.Values{}
		for k, v := range auth {
			q[k] = v
		}
		for k, v := range bad {
			q[k] = v
		}
		if res, err := client.Get(endpoint + "?" + q.Encode()); err != nil || res.StatusCode != 400 {
			t.Fatalf("%s: %v %v", name, res.StatusCode, err)
		}
	}
	// A tenant's user must name the tenant; a platform operator need not.
	for role, want := range map[string]int{"admin": http.StatusBadRequest, "sysadmin": http.StatusFound} {
		f := url.Values{"username": {"olga@example.com"}, "roles": {role}}
		for k, v := range auth {
			f[k] = v
		}
		if res, err := client.PostForm(endpoint, f); err != nil || res.StatusCode != want {
			t.Fatalf("%s without a tenant: %v %v, want %d", role, res.StatusCode, err, want)
		}
	}
	form := url.Values{"username": {"ada@example.com"}, "tenant_id": {"t-1"}, "roles": {"admin"}}
	for k, v := range auth {
		form[k] = v
	}
	login := func() string {
		res, err := client.PostForm(endpoint, form)
		if err != nil || res.StatusCode != http.StatusFound {
			t.Fatalf("login: %v %v", res.StatusCode, err)
		}
		to, _ := url.Parse(res.Header.Get("Location"))
		if !strings.HasPrefix(to.String(), "http://app.test/console/?") || to.Query().Get("state") != "s1" {
			t.Fatalf("redirected to %s", to)
		}
		return to.Query().Get("code")
	}
	tokenURL := iss.Issuer() + "/protocol/openid-connect/token"
	exchange := func(v url.Values) (int, map[string]any) {
		res, err := http.PostForm(tokenURL, v)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out
	}
	trade := func(code, verifier string) url.Values {
		return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
			"client_id": {"avb-console"}, "redirect_uri": {"http://app.test/console/"}}
	}
	if st, out := exchange(trade(login(), strings.Repeat("w", 50))); st != 400 || out["error"] != "invalid_grant" {
		t.Fatalf("wrong verifier: %d %v", st, out)
	}
	code := login()
	st, out := exchange(trade(code, verifier))
	if st != 200 || out["access_token"] == nil || out["refresh_token"] == nil {
		t.Fatalf("exchange: %d %v", st, out)
	}
	if st, _ := exchange(trade(code, verifier)); st != 400 {
		t.Fatal("a code was used twice")
	}
	provider, err := oidc.NewProvider(context.Background(), iss.Issuer())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := provider.Verifier(&oidc.Config{ClientID: "avb-api"}).Verify(context.Background(), out["access_token"].(string))
	if err != nil || tok.Subject != "dev|ada@example.com" {
		t.Fatalf("verify: %v %v", tok, err)
	}
	renew := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {out["refresh_token"].(string)}, "client_id": {"avb-console"}}
	if st, out2 := exchange(renew); st != 200 || out2["access_token"] == nil || out2["refresh_token"] == out["refresh_token"] {
		t.Fatalf("refresh: %d %v", st, out2)
	}
	if st, _ := exchange(renew); st != 400 {
		t.Fatal("a refresh token was used twice")
	}
	// The registered app's origin may call the token endpoint from a browser.
	req, _ := http.NewRequest(http.MethodOptions, tokenURL, nil)
	req.Header.Set("Origin", "http://app.test")
	res, err = http.DefaultClient.Do(req)
	if err != nil || res.Header.Get("Access-Control-Allow-Origin") != "http://app.test" {
		t.Fatalf("preflight: %v %v", res.Header, err)
	}
	req.Header.Set("Origin", "http://evil.test")
	if res, _ = http.DefaultClient.Do(req); res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("an unregistered origin may call the token endpoint")
	}
}
