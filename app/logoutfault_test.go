package app_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/authn"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/store"
)

// With Postgres hung or refusing, the back-channel logout answers 503 within
// the database's deadline (so the identity provider retries) and a token of
// a session avb has not seen is refused as unavailable within it too; once
// Postgres is back, the retried logout ends the session everywhere.
func TestLogoutAndSessionCheckWhilePostgresFails(t *testing.T) {
	t.Parallel()
	p, l := faultPlatform(t, nil)
	ten := p.tenant("logout-faults", store.TierPro)
	tok := func(sid string) []string {
		s, err := p.issuer.Issue(authn.Token{Subject: "ada", Email: "ada@example.com", TenantID: ten.ID.String(),
			Roles: []string{"admin"}, Audience: "avb-api", SessionID: sid})
		if err != nil {
			t.Fatal(err)
		}
		return bearer(s)
	}
	wantOK(t, p.call("/avb.v1.UserService/GetMe", `{}`, tok("live")...))
	logout := func(sid string) (int, time.Duration) {
		t.Helper()
		lt, err := p.issuer.LogoutToken(sid, "", "avb-api")
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		res, err := (&http.Client{Timeout: 20 * time.Second}).Post(p.base+authn.BackchannelLogoutPath,
			"application/x-www-form-urlencoded", strings.NewReader("logout_token="+lt))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode, time.Since(start)
	}
	bound, _ := time.ParseDuration(faultDeadlines["AVB_DATABASE_QUERY_TIMEOUT"])
	for i, f := range []testenv.Fault{testenv.Blackhole, testenv.Refused} {
		l.postgres.Inject(f, 0)
		if status, took := logout("live"); status != http.StatusServiceUnavailable || took > bound+faultMargin {
			t.Fatalf("logout with postgres %s: %d after %s", f, status, took)
		}
		r, took := p.timedCall("/avb.v1.UserService/GetMe", `{}`, tok(fmt.Sprintf("new-%d", i))...)
		wantUnavailableWithin(t, "a new session's check with postgres "+string(f), r, took, bound)
		l.postgres.Heal()
	}
	// The provider retries the logout: it is recorded, and the session's
	// tokens are refused from then on.
	eventuallyOK(t, p, "postgres back", "/avb.v1.UserService/GetMe", `{}`, tok("live")...)
	deadline := time.Now().Add(10 * time.Second)
	for status, _ := logout("live"); status != http.StatusOK; status, _ = logout("live") {
		if time.Now().After(deadline) {
			t.Fatalf("logout after postgres came back: %d", status)
		}
		time.Sleep(200 * time.Millisecond)
	}
	wantErr(t, p.call("/avb.v1.UserService/GetMe", `{}`, tok("live")...), 401, "unauthenticated", "session_logged_out")
}
