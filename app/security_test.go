package app_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/policy"
	"github.com/agentvoicebox/avb/store"
)

// A browser on another site can send a form (text/plain, urlencoded or
// multipart) to any URL without a preflight. No RPC, over Connect or REST,
// accepts one; and no answer sets a cookie a form could ride on.
func TestCrossSiteFormPostsRefused(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("csrf", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	forms := []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"}
	post := func(path, contentType string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, p.base+path, strings.NewReader(`{"name":"x"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		// Even with credentials a browser could not attach cross-site.
		req.Header.Set("Authorization", "Bearer "+admin)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode < 400 || res.StatusCode == http.StatusNotFound && !strings.HasPrefix(path, "/api/v2/") {
			t.Errorf("form post (%s) to %s: %d", contentType, path, res.StatusCode)
		}
		if c := res.Header.Get("Set-Cookie"); c != "" {
			t.Errorf("%s sets a cookie: %s", path, c)
		}
	}
	procedures := 0
	for md := range policy.Methods() {
		procedures++
		for _, ct := range forms {
			post("/"+string(md.Parent().FullName())+"/"+string(md.Name()), ct)
		}
	}
	routes := 0
	for _, rule := range httpRules(t) {
		if path := rule.GetPost(); path != "" {
			routes++
			// Path variables get a real-looking value.
			for strings.Contains(path, "{") {
				i, j := strings.Index(path, "{"), strings.Index(path, "}")
				path = path[:i] + "6c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f" + path[j+1:]
			}
			for _, ct := range forms {
				post(path, ct)
			}
		}
	}
	if procedures < 50 || routes < 10 {
		t.Fatalf("walked %d procedures and %d POST routes", procedures, routes)
	}
}

// Property 17 through the whole server in the prod profile: a database
// that is down, and a language model that answers with an error page or a
// malformed stream, reach the client as what failed (with a request id),
// never as the dependency's own words, addresses or the server's code.
func TestProdAnswersRevealNoInternals(t *testing.T) {
	t.Parallel()
	upstreamSecret := "upstream-secret-7f3a"
	var malformed bool
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if malformed {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "data: {\"choices\":[{\"delta\":{\"content\":%s\n\n", upstreamSecret)
			return
		}
		http.Error(w, "internal failure at /srv/model/server.py:88 "+upstreamSecret, http.StatusInternalServerError)
	}))
	t.Cleanup(model.Close)
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	pg := testenv.FaultyLink(t, "postgres", hostOf(owner))
	env := map[string]string{
		"AVB_PROFILE": "prod", "AVB_HTTPS_REDIRECT": "false", "AVB_SPICEDB_INSECURE": "true", "AVB_SESSION_WORKFLOWS": "false",
		"AVB_CLIENT_TOKEN_SECRET": "prod-test-client-token-secret-0123456789", "AVB_LOG_FORMAT": "text",
		"AVB_TEMPORAL_ADDRESS": testenv.Temporal(t),
		"AVB_DATABASE_URL":     withHost(testenv.AppURL(owner), pg.Addr()),
		"AVB_OPENAI_BASE_URL":  model.URL + "/v1", "AVB_OPENAI_MODEL": "m",
		"AVB_RATE_LIMIT_DEFAULT": "0", "AVB_RATE_LIMIT_API_KEY": "0", "AVB_RATE_LIMIT_ADMIN": "0",
	}
	p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), env), issuer, owner)
	if p.cfg.Profile != "prod" {
		t.Fatalf("profile %s", p.cfg.Profile)
	}
	ten := p.tenant("prodleak", store.TierPro)
	key, _ := p.realtimeKey(ten)
	forbidden := []string{upstreamSecret, "server.py", hostOf(model.URL), pg.Addr(), "dial tcp", "connection refused", "pgconn", "SQLSTATE",
		"SELECT", ".go:", "goroutine", "*store.", "*pgx"}
	clean := func(what, text string) {
		t.Helper()
		for _, f := range forbidden {
			if strings.Contains(text, f) {
				t.Errorf("%s reveals %q: %s", what, f, text)
			}
		}
	}

	// The language model fails, as an error page and as a broken stream.
	client := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))
	for _, m := range []bool{false, true} {
		malformed = m
		reply, reason, message, _ := askTurn(t, client, "openai")
		if reply != "" || reason != "provider_failed" || !strings.Contains(message, "request id") {
			t.Fatalf("model failure (malformed %v): reply %q, reason %q, message %q", m, reply, reason, message)
		}
		clean("the error event of a failed model", message)
	}

	// The database is down.
	pg.Inject(testenv.Refused, 0)
	r := p.call("/avb.v1.ProjectService/ListProjects", `{}`, "X-API-Key", key)
	if r.status == http.StatusOK {
		t.Fatalf("database down, yet %s", r.raw)
	}
	clean("an answer with the database down", r.raw)
	pg.Heal()
}
