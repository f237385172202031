package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/redis/go-redis/v9"

	"github.com/agentvoicebox/avb/apierror"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/events"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/workflows"
)

// workflowPlatform runs each call as a session workflow on the shared
// Temporal dev server, with the worker in process; it returns the platform,
// a tenant, a realtime API key of it and the Temporal address.
func workflowPlatform(t *testing.T) (*platform, *store.Tenant, string, string) {
	t.Helper()
	p, temporal := newWorkflowPlatform(t)
	ten := p.tenant("wf", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))["secret"].(string)
	return p, ten, key, temporal
}

// newWorkflowPlatform is a platform whose calls run as session workflows
// (as in production and `make dev`), with the worker in process; it returns
// the Temporal address too.
func newWorkflowPlatform(t *testing.T) (*platform, string) {
	t.Helper()
	temporal := testenv.Temporal(t)
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	return startPlatform(t, identityConfig(t, owner, issuer.Issuer(), map[string]string{
		"AVB_TEMPORAL_ADDRESS": temporal, "AVB_SESSION_WORKFLOWS": "true", "AVB_RUN_WORKER": "true"}), issuer, owner), temporal
}

// The call end to end with a real Temporal dev server: the session's
// workflow receives the turn, and the session row's status, metrics and the
// usage ledger come from the workflow.
func TestCallRunsAsSessionWorkflow(t *testing.T) {
	t.Parallel()
	p, ten, key, temporal := workflowPlatform(t)
	owner := p.owner

	sessions := avbv1connect.NewSessionServiceClient(http.DefaultClient, p.base, withKey(key))
	tc, err := client.Dial(client.Options{HostPort: temporal})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()

	// The tenant's event channel hears of the session's end.
	ropts, _ := redis.ParseURL(testenv.RedisURL(t))
	rdb := redis.NewClient(ropts)
	defer rdb.Close()
	sub := rdb.Subscribe(context.Background(), events.TenantChannel(ten.ID.String()))
	defer sub.Close()
	if _, err := sub.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}

	// CreateSession starts the workflow, tagged with the tenant.
	created, err := sessions.CreateSession(context.Background(), connect.NewRequest(&avbv1.CreateSessionRequest{Config: callConfig}))
	if err != nil {
		t.Fatal(err)
	}
	// The workflow starts in the background (CreateSession never waits
	// on Temporal); it exists moments later.
	id := created.Msg.GetSession().GetId()
	var desc *workflowservice.DescribeWorkflowExecutionResponse
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if desc, err = tc.DescribeWorkflowExecution(context.Background(), id, ""); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no workflow for the created session: %v", err)
		}
	}
	if st := desc.GetWorkflowExecutionInfo().GetStatus(); st != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
		t.Fatalf("workflow %v", st)
	}
	var tenantAttr string
	if err := converter.GetDefaultDataConverter().FromPayload(desc.GetWorkflowExecutionInfo().GetSearchAttributes().GetIndexedFields()[workflows.SearchAttributeTenant.GetName()], &tenantAttr); err != nil || tenantAttr != ten.ID.String() {
		t.Fatalf("tenant search attribute %q (%v)", tenantAttr, err)
	}

	// The call joins the created session and its workflow.
	client_ := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))
	tr := converseIn(t, client_, 20*time.Millisecond, id)
	if tr.final != ask || tr.sessionID != id {
		t.Fatalf("transcript %q in session %s", tr.final, tr.sessionID)
	}

	var sess *avbv1.Session
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		res, err := sessions.GetSession(context.Background(), connect.NewRequest(&avbv1.GetSessionRequest{SessionId: tr.sessionID}))
		if err != nil {
			t.Fatal(err)
		}
		if sess = res.Msg.GetSession(); sess.GetStatus() == avbv1.SessionStatus_SESSION_STATUS_COMPLETED || time.Now().After(deadline) {
			break
		}
	}
	m := sess.GetMetrics()
	if sess.GetStatus() != avbv1.SessionStatus_SESSION_STATUS_COMPLETED || m.GetTurns() != 1 || m.GetOutputTokens() != tr.done.GetOutputTokens() || m.GetInputAudioSeconds() < 2 {
		t.Fatalf("session %v metrics %v", sess.GetStatus(), m)
	}

	var out workflows.Outcome
	if err := tc.GetWorkflow(context.Background(), tr.sessionID, "").Get(context.Background(), &out); err != nil || out.Metrics.Turns != 1 {
		t.Fatalf("workflow outcome %+v (%v)", out, err)
	}
	iter := tc.GetWorkflowHistory(context.Background(), tr.sessionID, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	signals := map[string]int{}
	var history historypb.History
	for iter.HasNext() {
		ev, err := iter.Next()
		if err != nil {
			t.Fatal(err)
		}
		history.Events = append(history.Events, ev)
		if a := ev.GetWorkflowExecutionSignaledEventAttributes(); a != nil {
			signals[a.GetSignalName()]++
		}
	}
	if path := os.Getenv("AVB_RECORD_SESSION_HISTORY"); path != "" {
		// Refreshes workflows/testdata/session_history.json for the replay test.
		b, err := protojson.MarshalOptions{Indent: "  "}.Marshal(&history)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if signals[workflows.SignalTurn] != 1 || signals[workflows.SignalEnd] != 1 {
		t.Fatalf("workflow signals %v", signals)
	}
	select {
	case msg := <-sub.Channel():
		var ev events.Event
		if err := json.Unmarshal([]byte(msg.Payload), &ev); err != nil || ev.Type != events.SessionEnded ||
			ev.Data["session_id"] != tr.sessionID || ev.Data["status"] != "completed" || ev.Data["turns"] != float64(1) {
			t.Fatalf("event %s (%v)", msg.Payload, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no session.ended event on the notifications queue")
	}
	// The worker scheduled the periodic jobs on their task queues.
	for _, sch := range workflows.Schedules {
		d, err := tc.ScheduleClient().GetHandle(context.Background(), p.cfg.Temporal.QueuePrefix+sch.ID).Describe(context.Background())
		if err != nil {
			t.Fatalf("schedule %s: %v", sch.ID, err)
		}
		act, ok := d.Schedule.Action.(*client.ScheduleWorkflowAction)
		if !ok || act.TaskQueue != p.cfg.Temporal.QueuePrefix+sch.Queue || d.Schedule.Spec.Intervals[0].Every != sch.Every {
			t.Fatalf("schedule %s: %+v %+v", sch.ID, d.Schedule.Action, d.Schedule.Spec)
		}
	}
	var usage int
	if err := ownerDB(t, owner).QueryRow(context.Background(), "SELECT count(*) FROM usage_ledger WHERE session_id = $1", tr.sessionID).Scan(&usage); err != nil || usage != 5 {
		t.Fatalf("usage ledger rows %d (%v)", usage, err)
	}
}

// CreateSession with its workflow start against without, on one platform
// each, in the same run.
func TestCreateSessionLatency(t *testing.T) {
	temporal := testenv.Temporal(t)
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	p50 := func(workflows bool) time.Duration {
		p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), map[string]string{
			"AVB_TEMPORAL_ADDRESS": temporal, "AVB_SESSION_WORKFLOWS": fmt.Sprint(workflows), "AVB_RUN_WORKER": fmt.Sprint(workflows)}), issuer, owner)
		ten := p.tenant(fmt.Sprintf("cs%v", workflows), store.TierPro)
		sessions := avbv1connect.NewSessionServiceClient(http.DefaultClient, p.base, connect.WithInterceptors(bearerInterceptor(p.token(fmt.Sprintf("ada%v", workflows), ten.ID.String(), "admin"))))
		var took []time.Duration
		for i := range 41 {
			start := time.Now()
			if _, err := sessions.CreateSession(context.Background(), connect.NewRequest(&avbv1.CreateSessionRequest{Config: callConfig})); err != nil {
				t.Fatal(err)
			}
			if i > 0 { // the first call warms caches and connections
				took = append(took, time.Since(start))
			}
		}
		slices.Sort(took)
		return took[len(took)/2]
	}
	with, without := p50(true), p50(false)
	t.Logf("CreateSession p50: %v with the workflow start, %v without (%.2fx)", with, without, float64(with)/float64(without))
	if with > without+200*time.Millisecond {
		t.Fatalf("the workflow start costs %v", with-without)
	}
}

// When the workflow ends a session (here its idle timeout; the 24 h limit
// takes the same path), the live stream is closed on the instance holding
// it with a clear status that says why.
func TestWorkflowEndsLiveCallWithClearStatus(t *testing.T) {
	t.Parallel()
	p, _, key, _ := workflowPlatform(t)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key)).Converse(ctx)
	cfg := &avbv1.SessionConfig{TurnDetection: &avbv1.TurnDetection{IdleTimeoutSeconds: 2}}
	if err := stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Start{Start: &avbv1.SessionStart{Config: cfg}}}); err != nil {
		t.Fatal(err)
	}
	go func() { // a line nobody speaks on: silence in real time
		for stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Audio{Audio: &avbv1.AudioAppend{Audio: make([]byte, 640)}}}) == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}()
	opened := time.Now()
	var sessionID string
	var err error
	for err == nil {
		var msg *avbv1.ConverseResponse
		if msg, err = stream.Receive(); err == nil && msg.GetEvent().GetSessionStarted() != nil {
			sessionID = msg.GetEvent().GetSessionStarted().GetSession().GetId()
		}
	}
	t.Logf("stream closed %v after opening: %v", time.Since(opened).Round(time.Millisecond), err)
	if connect.CodeOf(err) != connect.CodeAborted || apierror.Reason(err) != "session_not_live" || !strings.Contains(err.Error(), workflows.ReasonIdle) {
		t.Fatalf("stream ended with %v (%s)", err, apierror.Reason(err))
	}
	if d := time.Since(opened); d < 2*time.Second || d > 10*time.Second {
		t.Fatalf("closed after %v, idle timeout 2 s", d)
	}
	sessions := avbv1connect.NewSessionServiceClient(http.DefaultClient, p.base, withKey(key))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		res, err := sessions.GetSession(context.Background(), connect.NewRequest(&avbv1.GetSessionRequest{SessionId: sessionID}))
		if err != nil {
			t.Fatal(err)
		}
		if s := res.Msg.GetSession(); s.GetStatus() == avbv1.SessionStatus_SESSION_STATUS_COMPLETED && s.GetError() == workflows.ReasonIdle {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %v", res.Msg.GetSession())
		}
	}
}

// TerminateSession on a session with a workflow ends the workflow too: it
// records the end (terminated) instead of waiting for the idle timeout.
func TestTerminateEndsTheSessionWorkflow(t *testing.T) {
	t.Parallel()
	p, _, key, temporal := workflowPlatform(t)
	sessions := avbv1connect.NewSessionServiceClient(http.DefaultClient, p.base, withKey(key))
	created, err := sessions.CreateSession(context.Background(), connect.NewRequest(&avbv1.CreateSessionRequest{Config: callConfig}))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.GetSession().GetId()
	res, err := sessions.TerminateSession(context.Background(), connect.NewRequest(&avbv1.TerminateSessionRequest{SessionId: id}))
	if err != nil || res.Msg.GetSession().GetStatus() != avbv1.SessionStatus_SESSION_STATUS_TERMINATED {
		t.Fatalf("terminate: %v %v", res, err)
	}
	tc, err := client.Dial(client.Options{HostPort: temporal})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out workflows.Outcome
	if err := tc.GetWorkflow(ctx, id, "").Get(ctx, &out); err != nil || out.Status != "terminated" {
		t.Fatalf("workflow outcome %+v (%v)", out, err)
	}
}
