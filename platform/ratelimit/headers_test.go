package ratelimit_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/authn"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/ratelimit"
	"github.com/agentvoicebox/avb/server"
	"github.com/agentvoicebox/avb/server/limits"
)

// Property 14 through the interceptor: random key tiers, tier limits and
// tenant ceilings, and random request times. Which requests are admitted
// and every X-RateLimit-* and Retry-After header match the model.
func TestHeadersMatchModel(t *testing.T) {
	rdb := testenv.RedisClient(t)
	var now atomic.Pointer[time.Time]
	l := ratelimit.New(rdb, fmt.Sprintf("test:rlh:%d:", time.Now().UnixNano()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	l.Now = func() time.Time { return *now.Load() }
	var caller atomic.Pointer[authn.Principal]
	as := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			return next(authn.WithPrincipal(ctx, caller.Load()), req)
		}
	})
	var tiers atomic.Pointer[limits.Tiers]
	dynamic := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			return limits.Interceptor(l, *tiers.Load(), nil).WrapUnary(next)(ctx, req)
		}
	})
	mux := http.NewServeMux()
	mux.Handle(avbv1connect.NewSystemServiceHandler(server.NewSystemServer("v", "test", nil), connect.WithInterceptors(as, dynamic)))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	rapid.Check(t, func(rt *rapid.T) {
		tr := limits.Tiers{APIKey: rapid.IntRange(1, 30).Draw(rt, "api_key"), Elevated: rapid.IntRange(1, 5).Draw(rt, "elevated"),
			Ceiling: map[string]int{"free": rapid.IntRange(0, 40).Draw(rt, "ceiling")}}
		tiers.Store(&tr)
		keyTier := rapid.SampledFrom([]string{"standard", "elevated", "unlimited"}).Draw(rt, "key_tier")
		caller.Store(&authn.Principal{Kind: authn.KindAPIKey, APIKeyID: uuid.New(), RateLimitTier: keyTier, TenantTier: "free"})
		// The limit, as the README states it.
		rate := map[string]int{"standard": tr.APIKey, "elevated": tr.APIKey * tr.Elevated, "unlimited": 0}[keyTier]
		if c := tr.Ceiling["free"]; c > 0 && (rate == 0 || rate > c) {
			rate = c
		}
		start := time.UnixMicro(rapid.Int64Range(1e15, 2e15).Draw(rt, "start"))
		at := start
		var m ratelimit.Model
		for i := range rapid.IntRange(1, 40).Draw(rt, "requests") {
			at = at.Add(time.Duration(rapid.Int64Range(0, int64(5*time.Second)).Draw(rt, "gap")))
			now.Store(&at)
			res, err := http.Post(srv.URL+"/avb.v1.SystemService/GetServerInfo", "application/json", strings.NewReader("{}"))
			if err != nil {
				rt.Fatal(err)
			}
			res.Body.Close()
			h := res.Header
			if rate == 0 {
				if res.StatusCode != http.StatusOK || h.Get(limits.HeaderLimit) != "" {
					rt.Fatalf("request %d without a limit: %d %v", i, res.StatusCode, h)
				}
				continue
			}
			want := m.Allow(at, ratelimit.PerMinute(rate))
			ceil := func(d time.Duration) string { return strconv.Itoa(int((d + time.Second - 1) / time.Second)) }
			wantHeaders := map[string]string{limits.HeaderLimit: strconv.Itoa(rate), limits.HeaderRemaining: strconv.Itoa(want.Remaining),
				limits.HeaderReset: ceil(want.ResetAfter), limits.HeaderRetryAfter: ""}
			wantStatus := http.StatusOK
			if !want.Allowed {
				wantStatus = http.StatusTooManyRequests
				wantHeaders[limits.HeaderRetryAfter] = strconv.Itoa(max(1, int((want.RetryAfter+time.Second-1)/time.Second)))
			}
			if res.StatusCode != wantStatus {
				rt.Fatalf("request %d at +%v: status %d, the model %+v", i, at.Sub(start), res.StatusCode, want)
			}
			for name, v := range wantHeaders {
				if got := h.Get(name); got != v {
					rt.Fatalf("request %d at +%v: %s %q, want %q (model %+v)", i, at.Sub(start), name, got, v, want)
				}
			}
		}
	})
}
