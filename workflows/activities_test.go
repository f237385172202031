package workflows_test

import (
	"context"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
	"github.com/agentvoicebox/avb/workflows"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The post-call activities against the real database: the session takes the
// workflow's metrics, usage is written once however often it is retried, and
// the transcript is stored.
func TestActivitiesRecordOnce(t *testing.T) {
	owner := testenv.Postgres(t)
	cfg := config.Database{URL: owner, MaxConns: 4, ConnectTimeout: 5 * time.Second, MaxConnLifetime: time.Hour, MaxConnIdleTime: time.Minute}
	odb, err := store.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.MigrateUp(t.Context(), odb.Pool); err != nil {
		t.Fatal(err)
	}
	odb.Close()
	cfg.URL = testenv.AppURL(owner)
	db, err := store.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ten := &store.Tenant{Name: "W", Slug: "wf"}
	if err := db.Tenants().Create(t.Context(), ten); err != nil {
		t.Fatal(err)
	}
	ctx := tenancy.With(context.Background(), ten.ID)
	sess := &store.Session{}
	if err := db.Sessions().Create(ctx, sess); err != nil {
		t.Fatal(err)
	}
	a := &workflows.Activities{DB: db}
	m := workflows.Metrics{Turns: 2, InputTokens: 10, OutputTokens: 20, InputAudioSeconds: 3, OutputAudioSeconds: 4, DurationSeconds: 60}
	ids := []string{sess.ID.String(), ten.ID.String()}
	for range 3 { // retried activities
		if err := a.FinalizeSession(context.Background(), workflows.FinalizeInput{SessionID: ids[0], TenantID: ids[1], Outcome: workflows.Outcome{Status: "completed", Metrics: m}}); err != nil {
			t.Fatal(err)
		}
		if err := a.RecordUsage(context.Background(), workflows.UsageInput{SessionID: ids[0], TenantID: ids[1], Metrics: m}); err != nil {
			t.Fatal(err)
		}
		if err := a.StoreTranscript(context.Background(), workflows.TranscriptInput{SessionID: ids[0], TenantID: ids[1], Turns: []workflows.Turn{{Transcript: "hi", Reply: "hello"}}}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := db.Sessions().Get(ctx, sess.ID)
	if err != nil || got.Status != "completed" || got.Turns != 2 || got.OutputTokens != 20 || got.DurationSeconds != 60 {
		t.Fatalf("session %+v %v", got, err)
	}
	usage, err := db.Sessions().Usage(ctx, sess.ID)
	if err != nil || len(usage) != 5 {
		t.Fatalf("usage %+v %v", usage, err)
	}
	for _, u := range usage {
		if u.Kind == "output_tokens" && u.Quantity != 20 {
			t.Fatalf("output tokens %v", u.Quantity)
		}
	}
}
