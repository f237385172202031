package workflows_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"go.temporal.io/sdk/testsuite"

	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
	"github.com/agentvoicebox/avb/voice/stt"
	"github.com/agentvoicebox/avb/voice/tts"
	"github.com/agentvoicebox/avb/workflows"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The post-call activities against the real database: the session takes the
// workflow's metrics, usage is written once however often it is retried, and
// the transcript is stored.
func TestActivitiesRecordOnce(t *testing.T) {
	db, _ := testenv.AppDB(t)
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
		if err := a.FinalizeSession(context.Background(), workflows.FinalizeInput{SessionID: ids[0], TenantID: ids[1], Outcome: workflows.Outcome{Status: "completed", Reason: workflows.ReasonIdle, Metrics: m}}); err != nil {
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
	// The platform ended it (idle): one system entry, however often retried.
	entries, _, err := db.AuditLog().List(ctx, store.AuditFilter{ResourceType: "session"}, 10, "")
	if err != nil || len(entries) != 1 || entries[0].ActorType != "system" || !strings.Contains(entries[0].Description, workflows.ReasonIdle) {
		t.Fatalf("audit %+v %v", entries, err)
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

// Cleanup ends only sessions open past the maximum age, in every tenant;
// the hourly rollup sums the ledger per tenant and is idempotent.
func TestMaintenanceActivities(t *testing.T) {
	db, owner := testenv.AppDB(t)
	a := &workflows.Activities{DB: db}
	var ids []uuid.UUID
	var tenants []uuid.UUID
	for _, slug := range []string{"m1", "m2"} {
		ten := &store.Tenant{Name: slug, Slug: slug}
		if err := db.Tenants().Create(t.Context(), ten); err != nil {
			t.Fatal(err)
		}
		tenants = append(tenants, ten.ID)
		ctx := tenancy.With(context.Background(), ten.ID)
		for range 2 {
			s := &store.Session{}
			if err := db.Sessions().Create(ctx, s); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, s.ID)
		}
		if err := db.Sessions().RecordUsage(ctx, []store.UsageEntry{{SessionID: ids[len(ids)-1], Kind: "output_tokens", Quantity: 10},
			{SessionID: ids[len(ids)-2], Kind: "output_tokens", Quantity: 5}}); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(context.Background(), owner)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// One stale session in each tenant.
	if _, err := conn.Exec(context.Background(), "UPDATE sessions SET created_at = now() - interval '26 hours' WHERE id = ANY($1)", []uuid.UUID{ids[0], ids[2]}); err != nil {
		t.Fatal(err)
	}
	n, err := a.ExpireSessions(context.Background(), workflows.SessionMaxAge)
	if err != nil || n != 2 {
		t.Fatalf("expired %d (%v), want 2", n, err)
	}
	for i, id := range ids {
		s, err := db.Sessions().Get(tenancy.With(context.Background(), tenants[i/2]), id)
		if err != nil {
			t.Fatal(err)
		}
		if want := i%2 == 0; (s.Status == store.SessionTerminated) != want {
			t.Fatalf("session %d: %s", i, s.Status)
		}
	}
	// Each ended session is in its tenant's audit log, by the system.
	for i, ten := range tenants {
		entries, _, err := db.AuditLog().List(tenancy.With(context.Background(), ten), store.AuditFilter{ResourceType: "session"}, 10, "")
		if err != nil || len(entries) != 1 || entries[0].ActorType != "system" || entries[0].ResourceID != ids[2*i].String() ||
			string(entries[0].NewValues) != `{"status": "terminated"}` {
			t.Fatalf("tenant %d audit: %+v %v", i, entries, err)
		}
	}
	// Retention keeps the coming months' partitions and drops nothing young.
	if n, err := a.RetainAudit(context.Background()); err != nil || n != 0 {
		t.Fatalf("retain: %d %v", n, err)
	}
	for range 2 { // idempotent
		if _, err := a.RollupUsage(context.Background(), time.Now().Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	for _, ten := range tenants {
		rows, err := db.Sessions().HourlyUsage(tenancy.With(context.Background(), ten), time.Now().Add(-2*time.Hour))
		if err != nil || len(rows) != 1 || rows[0].Quantity != 15 || rows[0].TenantID != ten {
			t.Fatalf("tenant %s hourly usage %+v (%v)", ten, rows, err)
		}
	}
}

// A text synthesized by one job and the WAV transcribed by another give the
// text back: the batch speech activities with the real engines.
func TestSpeechJobsRoundTrip(t *testing.T) {
	db, _ := testenv.AppDB(t)
	ten := &store.Tenant{Name: "J", Slug: "jobs"}
	if err := db.Tenants().Create(t.Context(), ten); err != nil {
		t.Fatal(err)
	}
	ctx := tenancy.With(context.Background(), ten.ID)
	speech, err := tts.NewEspeak()
	if err != nil {
		t.Fatal(err)
	}
	j := &workflows.Jobs{DB: db, STT: stt.NewPocketsphinx("", 1), TTS: speech}
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivity(j)
	const text = "please book a meeting for tomorrow at ten"
	syn := &store.VoiceJob{Kind: store.JobSynthesize, Input: []byte(text)}
	if err := db.VoiceJobs().Create(ctx, syn); err != nil {
		t.Fatal(err)
	}
	if _, err := env.ExecuteActivity(j.Synthesize, workflows.JobInput{JobID: syn.ID.String(), TenantID: ten.ID.String()}); err != nil {
		t.Fatal(err)
	}
	done, err := db.VoiceJobs().Get(ctx, syn.ID)
	if err != nil || done.Status != store.JobSucceeded || len(done.Output) < 44 {
		t.Fatalf("synthesis job %s, %d bytes (%v)", done.Status, len(done.Output), err)
	}
	// Two utterances in one file.
	silence := make([]byte, 22050*2) // 1 s at 22,050 Hz
	twice := append(append(append([]byte(nil), done.Output...), silence...), done.Output[44:]...)
	fixWAVSize(twice)
	opts, _ := json.Marshal(workflows.JobOptions{Phrases: []string{text, "cancel my meeting"}})
	tr := &store.VoiceJob{Kind: store.JobTranscribe, Input: twice, Options: opts}
	if err := db.VoiceJobs().Create(ctx, tr); err != nil {
		t.Fatal(err)
	}
	if _, err := env.ExecuteActivity(j.Transcribe, workflows.JobInput{JobID: tr.ID.String(), TenantID: ten.ID.String()}); err != nil {
		t.Fatal(err)
	}
	got, err := db.VoiceJobs().Get(ctx, tr.ID)
	if err != nil || got.Status != store.JobSucceeded || string(got.Output) != text+"\n"+text {
		t.Fatalf("transcription job %s: %q (%v)", got.Status, got.Output, err)
	}
}

// fixWAVSize rewrites the RIFF and data sizes of a canonical 44-byte-header WAV.
func fixWAVSize(b []byte) {
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)-8))
	binary.LittleEndian.PutUint32(b[40:], uint32(len(b)-44))
}
