package app_test

import (
	"context"
	"encoding/csv"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/events"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

// A notification reaches the user's inbox and, live, their subscription;
// reading it is per user; API keys have no inbox.
func TestNotificationsInboxAndLiveDelivery(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("inbox", store.TierPro)
	tok := p.token("ann", ten.ID.String(), "viewer")
	me := str(wantOK(t, p.call("/avb.v1.UserService/GetMe", "{}", bearer(tok)...)), "user", "id")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := avbv1connect.NewEventServiceClient(http.DefaultClient, p.base, connect.WithInterceptors(bearerInterceptor(tok)))
	stream, err := client.Subscribe(ctx, connect.NewRequest(&avbv1.SubscribeRequest{Types: []string{events.NotificationCreated}}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() || stream.Msg().GetHeartbeat() == nil {
		t.Fatalf("no first heartbeat: %v", stream.Err())
	}
	opts, _ := redis.ParseURL(testenv.RedisURL(t))
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	notifier := events.Notifier{DB: p.app.DB(), Hub: events.Hub{Redis: rdb}}
	uid := uuid.MustParse(me)
	tctx := tenancy.With(context.Background(), ten.ID)
	for _, n := range []*store.Notification{
		{Type: "billing.alert", Severity: "warning", Title: "80% of your minutes used"},
		{Type: "key.expiring", Title: "Your key expires tomorrow", UserID: &uid},
	} {
		if err := notifier.Notify(tctx, n); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"billing.alert", "key.expiring"} {
		if !stream.Receive() || stream.Msg().GetEvent().GetData().AsMap()["type"] != want {
			t.Fatalf("live delivery: want %s, got %v (%v)", want, stream.Msg(), stream.Err())
		}
	}

	res := wantOK(t, p.call("/avb.v1.NotificationService/ListNotifications", `{"unreadOnly":true}`, bearer(tok)...))
	list := items(res, "notifications")
	if len(list) != 2 || res["unreadCount"] != "2" || str(list[0].(map[string]any), "type") != "key.expiring" {
		t.Fatalf("inbox %v", res)
	}
	first := str(list[0].(map[string]any), "id")
	marked := wantOK(t, p.call("/avb.v1.NotificationService/MarkNotificationsRead", `{"notificationIds":["`+first+`"]}`, bearer(tok)...))
	if marked["markedCount"] != "1" || marked["unreadCount"] != "1" {
		t.Fatalf("mark read: %v", marked)
	}
	wantErr(t, p.call("/avb.v1.NotificationService/MarkNotificationsRead", `{}`, bearer(tok)...), 400, "invalid_argument", "validation_failed")
	// Another user of the tenant still has the tenant-wide one unread.
	bob := p.token("bob", ten.ID.String(), "viewer")
	if r := wantOK(t, p.call("/avb.v1.NotificationService/ListNotifications", `{}`, bearer(bob)...)); r["unreadCount"] != "1" || len(items(r, "notifications")) != 1 {
		t.Fatalf("bob's inbox %v", r)
	}
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"k","scopes":["API_KEY_SCOPE_ADMIN"]}`, bearer(p.token("ada", ten.ID.String(), "admin"))...))
	wantErr(t, p.call("/avb.v1.NotificationService/ListNotifications", `{}`, "X-API-Key", str(key, "secret")), 403, "permission_denied", "permission_denied")
}

// Billing reads usage from the ledger the session workflows write, prices
// the month by tier, and is open to the billing role but not to operators.
func TestBillingUsageProjectionAndAccess(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("billing", store.TierStarter)
	tctx := tenancy.With(context.Background(), ten.ID)
	db := p.app.DB()
	for range 3 {
		s := &store.Session{}
		if err := db.Sessions().Create(tctx, s); err != nil {
			t.Fatal(err)
		}
		if err := db.Sessions().RecordUsage(tctx, []store.UsageEntry{{SessionID: s.ID, Kind: "session", Quantity: 1},
			{SessionID: s.ID, Kind: "audio_in_seconds", Quantity: 120}, {SessionID: s.ID, Kind: "audio_out_seconds", Quantity: 60},
			{SessionID: s.ID, Kind: "input_tokens", Quantity: 1000}, {SessionID: s.ID, Kind: "output_tokens", Quantity: 2000}}); err != nil {
			t.Fatal(err)
		}
	}
	biller := bearer(p.token("bill", ten.ID.String(), "billing"))
	u := wantOK(t, p.call("/avb.v1.BillingService/GetUsage", `{}`, biller...))["usage"].(map[string]any)
	if u["sessions"] != "3" || u["audioInputMinutes"] != 6.0 || u["audioOutputMinutes"] != 3.0 || u["inputTokens"] != "3000" || u["outputTokens"] != "6000" {
		t.Fatalf("usage %v", u)
	}
	// The month's usage by day: one entry per day up to today, today's
	// holding it all.
	days := items(wantOK(t, p.call("/avb.v1.BillingService/GetUsage", `{}`, biller...)), "days")
	if now := time.Now().UTC(); len(days) != now.Day() {
		t.Fatalf("%d days of usage on day %d of the month", len(days), now.Day())
	}
	if today := days[len(days)-1].(map[string]any); today["sessions"] != "3" || today["outputTokens"] != "6000" {
		t.Fatalf("today's usage %v", today)
	}
	// A period before any usage is empty.
	empty := wantOK(t, p.call("/avb.v1.BillingService/GetUsage", `{"startTime":"2020-01-01T00:00:00Z","endTime":"2020-02-01T00:00:00Z"}`, biller...))
	if n, _ := empty["usage"].(map[string]any)["sessions"].(string); n != "" {
		t.Fatalf("old period has usage: %v", empty)
	}
	r := p.call("/avb.v1.BillingService/GetUsage", `{"startTime":"2020-02-01T00:00:00Z","endTime":"2020-01-01T00:00:00Z"}`, biller...)
	wantErr(t, r, 400, "invalid_argument", "validation_failed")

	proj := wantOK(t, p.call("/avb.v1.BillingService/GetProjectedCost", `{}`, biller...))
	// starter: 6 min in at 1.0 + 3 min out at 1.5 + 3k in tokens at 0.05/k + 6k out at 0.15/k = 6 + 4.5 + 0.15 + 0.9 -> 6+5+0+1 cents, plus 2900 base.
	toDate := proj["toDate"].(map[string]any)
	if proj["tier"] != "starter" || toDate["currency"] != "USD" || toDate["amountMinor"] != "2912" {
		t.Fatalf("projection %v", proj)
	}
	if projected, _ := strconv.Atoi(proj["projected"].(map[string]any)["amountMinor"].(string)); projected < 2912 {
		t.Fatalf("projected %d below to date", projected)
	}
	if inv := wantOK(t, p.call("/avb.v1.BillingService/ListInvoices", `{}`, biller...)); len(items(inv, "invoices")) != 0 {
		t.Fatalf("invoices before the provider is connected: %v", inv)
	}
	wantErr(t, p.call("/avb.v1.BillingService/GetUsage", `{}`, bearer(p.token("op", ten.ID.String(), "operator"))...), 403, "permission_denied", "permission_denied")
}

// The audit log lists with filters and exports as CSV over a server stream,
// in pages of whole rows; only administrators read it.
func TestAuditListAndCSVExport(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("audit", store.TierPro)
	tctx := tenancy.With(context.Background(), ten.ID)
	actor := uuid.New()
	for i := range 620 {
		action := "project.update"
		if i%10 == 0 {
			action = "api_key.revoke"
		}
		if err := p.app.DB().AuditLog().Append(tctx, &store.AuditEntry{ActorType: "user", ActorID: &actor, Action: action,
			ResourceType: "project", ResourceID: "=HYPERLINK(\"x\")", IPAddress: "10.0.0.1"}); err != nil {
			t.Fatal(err)
		}
	}
	admin := p.token("ada", ten.ID.String(), "admin")
	res := wantOK(t, p.call("/avb.v1.AuditService/ListAuditLogs", `{"pageSize":10,"filter":{"action":"api_key.revoke"}}`, bearer(admin)...))
	if len(items(res, "entries")) != 10 || str(res, "nextPageToken") == "" {
		t.Fatalf("filtered page %v", res)
	}
	wantErr(t, p.call("/avb.v1.AuditService/ListAuditLogs", `{}`, bearer(p.token("dev", ten.ID.String(), "developer"))...), 403, "permission_denied", "permission_denied")
	wantErr(t, p.call("/avb.v1.AuditService/ListAuditLogs", `{"filter":{"startTime":"2030-01-01T00:00:00Z","endTime":"2020-01-01T00:00:00Z"}}`, bearer(admin)...), 400, "invalid_argument", "validation_failed")

	client := avbv1connect.NewAuditServiceClient(http.DefaultClient, p.base, connect.WithInterceptors(bearerInterceptor(admin)))
	stream, err := client.ExportAuditLogs(context.Background(), connect.NewRequest(&avbv1.ExportAuditLogsRequest{Filter: &avbv1.AuditFilter{ActorId: actor.String()}}))
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	var chunks, rows int
	for stream.Receive() {
		chunks++
		rows += int(stream.Msg().GetRows())
		all.Write(stream.Msg().GetCsv())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	records, err := csv.NewReader(strings.NewReader(all.String())).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if chunks != 2 || rows != 620 || len(records) != 621 || records[0][0] != "id" || records[1][8] != "'=HYPERLINK(\"x\")" {
		t.Fatalf("export: %d chunks, %d rows, %d records, first %v", chunks, rows, len(records), records[1])
	}
}
