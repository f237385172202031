package app_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.temporal.io/sdk/client"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/workflows"
)

// The server process holding a call is killed (SIGKILL, no goodbye): the
// session's workflow notices the missing heartbeats, ends the session as
// error, and keeps the usage of the turn already reported.
func TestKilledServerEndsSessionAsErrorKeepingUsage(t *testing.T) {
	temporal := testenv.Temporal(t)
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	env := identityEnv(t, owner, issuer.Issuer(), map[string]string{
		"AVB_TEMPORAL_ADDRESS": temporal, "AVB_SESSION_WORKFLOWS": "true", "AVB_SESSION_HEARTBEAT_TIMEOUT": "3s"})
	// This process runs the worker and administers; the call goes to a child.
	workerEnv := map[string]string{"AVB_RUN_WORKER": "true"}
	for k, v := range env {
		workerEnv[k] = v
	}
	p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), workerEnv), issuer, owner)
	ten := p.tenant("crash", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))["secret"].(string)

	srv, base, logs := startChild(t, env)

	// One turn, answered; the stream stays open.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	voiceClient := avbv1connect.NewVoiceServiceClient(h2c(), base, connect.WithGRPC(), withKey(key))
	stream := voiceClient.Converse(ctx)
	if err := stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Start{Start: &avbv1.SessionStart{Config: callConfig}}}); err != nil {
		t.Fatal(err)
	}
	go askIn(t, stream, 5*time.Millisecond)
	var sessionID string
	var done *avbv1.ResponseDone
	for done == nil {
		msg, err := stream.Receive()
		if err != nil {
			t.Fatalf("receive: %v\n%s", err, logs)
		}
		if s := msg.GetEvent().GetSessionStarted(); s != nil {
			sessionID = s.GetSession().GetId()
		}
		done = msg.GetEvent().GetResponseDone()
	}

	// Wait until the workflow has the turn, then kill the server.
	tc, err := client.Dial(client.Options{HostPort: temporal})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var m workflows.Metrics
		if v, err := tc.QueryWorkflow(context.Background(), sessionID, "", workflows.QueryMetrics); err == nil && v.Get(&m) == nil && m.Turns == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the workflow never got the turn")
		}
	}
	killed := time.Now()
	if err := srv.Process.Kill(); err != nil {
		t.Fatal(err)
	}

	sessions := avbv1connect.NewSessionServiceClient(http.DefaultClient, p.base, withKey(key))
	var sess *avbv1.Session
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		res, err := sessions.GetSession(context.Background(), connect.NewRequest(&avbv1.GetSessionRequest{SessionId: sessionID}))
		if err != nil {
			t.Fatal(err)
		}
		if sess = res.Msg.GetSession(); sess.GetStatus() != avbv1.SessionStatus_SESSION_STATUS_ACTIVE || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("session ended %v after the kill: %v %q", time.Since(killed).Round(time.Millisecond), sess.GetStatus(), sess.GetError())
	m := sess.GetMetrics()
	if sess.GetStatus() != avbv1.SessionStatus_SESSION_STATUS_ERROR || sess.GetError() != workflows.ReasonLost {
		t.Fatalf("session %v %q", sess.GetStatus(), sess.GetError())
	}
	if m.GetTurns() != 1 || m.GetOutputTokens() != done.GetOutputTokens() || m.GetOutputAudioSeconds() <= 0 {
		t.Fatalf("metrics %v, the turn reported %d output tokens", m, done.GetOutputTokens())
	}
	// The workflow records usage right after it ends the session (a
	// post-call activity, retried), so the ledger may follow a moment later.
	db := ownerDB(t, owner)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var tokens float64
		err := db.QueryRow(context.Background(),
			"SELECT quantity FROM usage_ledger WHERE session_id = $1 AND kind = 'output_tokens'", sessionID).Scan(&tokens)
		if err == nil && tokens == float64(done.GetOutputTokens()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ledger output tokens %v (%v), want %d", tokens, err, done.GetOutputTokens())
		}
	}
}

// startChild runs `avb serve` as a child process with env (its own
// address), waits until it is ready, and kills it when the test ends.
func startChild(t *testing.T, env map[string]string) (*exec.Cmd, string, *testenv.LogBuffer) {
	t.Helper()
	return startChildOf(t, buildAvb(t), env)
}

// buildAvb builds the avb binary for child processes.
func buildAvb(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "avb")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/avb").CombinedOutput(); err != nil {
		t.Fatalf("build avb: %v\n%s", err, out)
	}
	return bin
}

// startChildOf runs bin as `avb serve` (see startChild).
func startChildOf(t *testing.T, bin string, env map[string]string) (*exec.Cmd, string, *testenv.LogBuffer) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	srv := exec.Command(bin, "serve")
	srv.Env = []string{"PATH=" + os.Getenv("PATH"), "AVB_HTTP_ADDR=" + addr}
	for k, v := range env {
		if k != "AVB_HTTP_ADDR" {
			srv.Env = append(srv.Env, k+"="+v)
		}
	}
	logs := &testenv.LogBuffer{}
	srv.Stdout, srv.Stderr = logs, logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	base := "http://" + addr
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if r, err := http.Get(base + "/health/ready/"); err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("child server not ready:\n%s", logs)
		}
	}
	return srv, base, logs
}
