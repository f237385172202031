package app_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/redis/go-redis/v9"

	"github.com/agentvoicebox/avb/apierror"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/events"
	"github.com/agentvoicebox/avb/store"
)

// quotaTenant makes a tenant of tier whose month allows sessions sessions,
// and an admin's API key of it.
func quotaTenant(t *testing.T, p *platform, slug, tier string, sessions int) (*store.Tenant, string) {
	t.Helper()
	ten := p.tenant(slug, tier)
	db := ownerDB(t, p.owner)
	if _, err := db.Exec(context.Background(), "UPDATE tenants SET max_sessions_per_month = $1 WHERE id = $2", sessions, ten.ID); err != nil {
		t.Fatal(err)
	}
	admin := p.token("admin-"+slug, ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"ops","scopes":["API_KEY_SCOPE_ADMIN","API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))["secret"].(string)
	return ten, key
}

// At 100% of its monthly sessions, a tier without overage refuses new
// sessions with resource_exhausted / quota_exceeded on every protocol,
// while a session made before goes on; a tier with overage goes past.
func TestQuotaRefusesNewSessionsOverEveryProtocol(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten, key := quotaTenant(t, p, "quota-free", store.TierFree, 2)

	sessions := avbv1connect.NewSessionServiceClient(http.DefaultClient, p.base, withKey(key))
	var first string
	for i := range 2 {
		res, err := sessions.CreateSession(context.Background(), connect.NewRequest(&avbv1.CreateSessionRequest{Config: callConfig}))
		if err != nil {
			t.Fatalf("session %d within the quota: %v", i+1, err)
		}
		if i == 0 {
			first = res.Msg.GetSession().GetId()
		}
	}
	// Connect.
	_, err := sessions.CreateSession(context.Background(), connect.NewRequest(&avbv1.CreateSessionRequest{Config: callConfig}))
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted || apierror.Reason(err) != "quota_exceeded" ||
		!strings.Contains(ce.Message(), "monthly quota of sessions (2 of 2)") {
		t.Fatalf("connect: %v (reason %q)", err, apierror.Reason(err))
	}
	if md := apierror.Info(err).GetMetadata(); md["metric"] != "sessions" || md["quota"] != "2" || md["period_end"] == "" {
		t.Fatalf("error info %v", md)
	}
	// gRPC, on the call path (Converse without a session makes one).
	voice := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))
	stream := voice.Converse(context.Background())
	_ = stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Start{Start: &avbv1.SessionStart{Config: callConfig}}})
	_, err = stream.Receive()
	_ = stream.CloseRequest()
	_ = stream.CloseResponse()
	if connect.CodeOf(err) != connect.CodeResourceExhausted || apierror.Reason(err) != "quota_exceeded" {
		t.Fatalf("grpc converse: %v (reason %q)", err, apierror.Reason(err))
	}
	grpcSessions := avbv1connect.NewSessionServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))
	if _, err := grpcSessions.CreateSession(context.Background(), connect.NewRequest(&avbv1.CreateSessionRequest{Config: callConfig})); connect.CodeOf(err) != connect.CodeResourceExhausted || apierror.Reason(err) != "quota_exceeded" {
		t.Fatalf("grpc: %v", err)
	}
	// REST.
	r := p.rest(http.MethodPost, "/api/v2/sessions", `{"config":{"voice":"en-us"}}`, "X-API-Key", key)
	if r.status != http.StatusTooManyRequests || !strings.Contains(r.raw, "quota_exceeded") || !strings.Contains(r.raw, `"code":8`) {
		t.Fatalf("rest: %d %s", r.status, r.raw)
	}
	// The session made before the quota was reached still takes its call.
	tr := converseIn(t, voice, 20*time.Millisecond, first)
	if tr.final != ask {
		t.Fatalf("a session made within the quota was cut: transcript %q", tr.final)
	}
	// The billing users heard of 80% and 100%, once each.
	db := ownerDB(t, p.owner)
	var n int
	if err := db.QueryRow(context.Background(), "SELECT count(*) FROM billing_alerts WHERE tenant_id = $1", ten.ID).Scan(&n); err != nil || n != 2 {
		t.Fatalf("alerts fired: %d %v", n, err)
	}

	// A tier billed as overage goes past 100%.
	_, proKey := quotaTenant(t, p, "quota-pro", store.TierPro, 1)
	pro := avbv1connect.NewSessionServiceClient(http.DefaultClient, p.base, withKey(proKey))
	for i := range 3 {
		if _, err := pro.CreateSession(context.Background(), connect.NewRequest(&avbv1.CreateSessionRequest{Config: callConfig})); err != nil {
			t.Fatalf("overage session %d: %v", i+1, err)
		}
	}
}

// Two instances racing past the thresholds fire each alert once: one
// billing.alert event and one notification per billing user per threshold.
func TestUsageAlertsFireOnceAcrossInstances(t *testing.T) {
	t.Parallel()
	_, a, b := twoInstances(t)
	ten, key := quotaTenant(t, a, "alerts", store.TierPro, 20)
	ropts, _ := redis.ParseURL(testenv.RedisURL(t))
	rdb := redis.NewClient(ropts)
	defer rdb.Close()
	sub := rdb.Subscribe(context.Background(), events.TenantChannel(ten.ID.String()))
	defer sub.Close()
	if _, err := sub.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for _, p := range []*platform{a, b} {
		c := avbv1connect.NewSessionServiceClient(http.DefaultClient, p.base, withKey(key))
		for range 4 {
			wg.Go(func() {
				for range 5 {
					if _, err := c.CreateSession(context.Background(), connect.NewRequest(&avbv1.CreateSessionRequest{Config: callConfig})); err != nil {
						errs <- err
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("session within an overage tier: %v", err)
	}
	seen := map[string]int{}
	timeout := time.After(2 * time.Second)
collect:
	for {
		select {
		case m := <-sub.Channel():
			if strings.Contains(m.Payload, `"billing.alert"`) {
				for _, th := range []string{`"threshold":80`, `"threshold":100`} {
					if strings.Contains(m.Payload, th) {
						seen[th]++
					}
				}
			}
		case <-timeout:
			break collect
		}
	}
	if seen[`"threshold":80`] != 1 || seen[`"threshold":100`] != 1 {
		t.Fatalf("billing.alert events %v, want each threshold once", seen)
	}
	db := ownerDB(t, a.owner)
	var alerts, notes int
	if err := db.QueryRow(context.Background(), "SELECT count(*) FROM billing_alerts WHERE tenant_id = $1", ten.ID).Scan(&alerts); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(context.Background(), "SELECT count(*) FROM notifications WHERE tenant_id = $1 AND type = 'billing.alert'", ten.ID).Scan(&notes); err != nil {
		t.Fatal(err)
	}
	if alerts != 2 || notes != 2 { // one billing user: the admin
		t.Fatalf("%d alerts, %d notifications; want 2 and 2", alerts, notes)
	}
}
