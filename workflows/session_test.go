package workflows_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/testsuite"
	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/workflows"
)

func newEnv(t testing.TB) *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflow(workflows.SessionWorkflow)
	env.RegisterActivity(&workflows.Activities{})
	env.RegisterActivity(&workflows.Notifications{})
	var n *workflows.Notifications
	env.OnActivity(n.SessionEnded, mock.Anything, mock.Anything).Return(nil).Maybe()
	return env
}

// okActivities makes every post-call activity succeed.
func okActivities(env *testsuite.TestWorkflowEnvironment) {
	var a *workflows.Activities
	env.OnActivity(a.FinalizeSession, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(a.RecordUsage, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(a.StoreTranscript, mock.Anything, mock.Anything).Return(nil)
}

const (
	sessionID = "3f0c1d7e-2f52-4f0e-9e53-9d3c1c7a0001"
	tenantID  = "3f0c1d7e-2f52-4f0e-9e53-9d3c1c7a0002"
)

// Property 11: whatever the call does before it, a session is terminated at
// 24 hours (time skipping), with every reported turn in its metrics.
func TestPropertySessionEndsAt24Hours(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		env := newEnv(t)
		okActivities(env)
		n := rapid.IntRange(0, 20).Draw(rt, "turns")
		var tokens int64
		for i := range n {
			at := time.Duration(rapid.Int64Range(1, int64(24*time.Hour)-1).Draw(rt, "at"))
			out := rapid.Int64Range(0, 500).Draw(rt, "tokens")
			tokens += out
			_ = i
			env.RegisterDelayedCallback(func() {
				env.SignalWorkflow(workflows.SignalTurn, workflows.Turn{OutputTokens: out, InputAudioSec: 1})
			}, at)
		}
		env.ExecuteWorkflow(workflows.SessionWorkflow, workflows.SessionInput{SessionID: sessionID, TenantID: tenantID, MaxDuration: 24 * time.Hour})
		if !env.IsWorkflowCompleted() || env.GetWorkflowError() != nil {
			rt.Fatalf("workflow: %v", env.GetWorkflowError())
		}
		var out workflows.Outcome
		if err := env.GetWorkflowResult(&out); err != nil {
			rt.Fatal(err)
		}
		if out.Status != "terminated" || out.Reason != workflows.ReasonMaxDuration {
			rt.Fatalf("outcome %+v", out)
		}
		if out.Metrics.DurationSeconds != (24 * time.Hour).Seconds() {
			rt.Fatalf("ended after %v s", out.Metrics.DurationSeconds)
		}
		if out.Metrics.Turns != n || out.Metrics.OutputTokens != tokens || out.Metrics.InputAudioSeconds != float64(n) {
			rt.Fatalf("metrics %+v, want %d turns and %d tokens", out.Metrics, n, tokens)
		}
	})
}

// Property 12: a failing post-call activity is tried exactly 3 times, with
// exponential backoff (1 s, then 2 s), and the failure is reported.
func TestPropertyActivitiesRetryThreeTimes(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		env := newEnv(t)
		var a *workflows.Activities
		failing := rapid.SampledFrom([]string{"finalize", "usage", "transcript"}).Draw(rt, "failing")
		var attempts []time.Time
		fail := func(context.Context, any) error {
			attempts = append(attempts, env.Now())
			return errors.New("database unavailable")
		}
		ok := func(context.Context, any) error { return nil }
		pick := func(name string) any {
			if name == failing {
				return fail
			}
			return ok
		}
		env.OnActivity(a.FinalizeSession, mock.Anything, mock.Anything).Return(func(ctx context.Context, in workflows.FinalizeInput) error {
			return pick("finalize").(func(context.Context, any) error)(ctx, in)
		})
		env.OnActivity(a.RecordUsage, mock.Anything, mock.Anything).Return(func(ctx context.Context, in workflows.UsageInput) error {
			return pick("usage").(func(context.Context, any) error)(ctx, in)
		})
		env.OnActivity(a.StoreTranscript, mock.Anything, mock.Anything).Return(func(ctx context.Context, in workflows.TranscriptInput) error {
			return pick("transcript").(func(context.Context, any) error)(ctx, in)
		})
		env.RegisterDelayedCallback(func() {
			env.SignalWorkflow(workflows.SignalEnd, workflows.End{Status: "completed"})
		}, time.Minute)
		env.ExecuteWorkflow(workflows.SessionWorkflow, workflows.SessionInput{SessionID: sessionID, TenantID: tenantID})
		if env.GetWorkflowError() == nil {
			rt.Fatal("a failed post-call activity went unreported")
		}
		if len(attempts) != 3 {
			rt.Fatalf("%s tried %d times, want 3", failing, len(attempts))
		}
		if d1, d2 := attempts[1].Sub(attempts[0]), attempts[2].Sub(attempts[1]); d1 != time.Second || d2 != 2*time.Second {
			rt.Fatalf("backoff %s then %s, want 1s then 2s", d1, d2)
		}
	})
}

func outcome(t *testing.T, env *testsuite.TestWorkflowEnvironment) workflows.Outcome {
	t.Helper()
	var out workflows.Outcome
	if err := env.GetWorkflowResult(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// A call that stops reporting (its server died) ends as an error after the
// heartbeat timeout, keeping the usage already reported.
func TestLostCallEndsAsErrorKeepingUsage(t *testing.T) {
	env := newEnv(t)
	okActivities(env)
	for _, at := range []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second} {
		env.RegisterDelayedCallback(func() { env.SignalWorkflow(workflows.SignalHeartbeat, nil) }, at)
	}
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(workflows.SignalTurn, workflows.Turn{InputTokens: 7, OutputTokens: 9, InputAudioSec: 2.5})
	}, 25*time.Second)
	env.ExecuteWorkflow(workflows.SessionWorkflow, workflows.SessionInput{SessionID: sessionID, TenantID: tenantID, HeartbeatTimeout: time.Minute})
	out := outcome(t, env)
	if out.Status != "error" || out.Reason != workflows.ReasonLost || out.Metrics.OutputTokens != 9 || out.Metrics.InputAudioSeconds != 2.5 {
		t.Fatalf("outcome %+v", out)
	}
	if out.Metrics.DurationSeconds != 90 { // last heartbeat at 30 s + 60 s
		t.Fatalf("ended after %v s", out.Metrics.DurationSeconds)
	}
}

// Nobody speaking for the idle timeout ends the session, completed.
func TestIdleSessionCompletes(t *testing.T) {
	env := newEnv(t)
	okActivities(env)
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(workflows.SignalTurn, workflows.Turn{}) }, 4*time.Minute)
	env.ExecuteWorkflow(workflows.SessionWorkflow, workflows.SessionInput{SessionID: sessionID, TenantID: tenantID, IdleTimeout: 5 * time.Minute})
	if out := outcome(t, env); out.Status != "completed" || out.Reason != workflows.ReasonIdle || out.Metrics.DurationSeconds != 540 {
		t.Fatalf("outcome %+v", out)
	}
}

// A session created and never joined is not a lost call: it waits for its
// idle timeout, not the heartbeat timeout, and ends completed.
func TestUnjoinedSessionEndsAtIdleTimeout(t *testing.T) {
	env := newEnv(t)
	okActivities(env)
	env.ExecuteWorkflow(workflows.SessionWorkflow, workflows.SessionInput{SessionID: sessionID, TenantID: tenantID,
		IdleTimeout: 10 * time.Minute, HeartbeatTimeout: time.Minute})
	if out := outcome(t, env); out.Status != "completed" || out.Reason != workflows.ReasonIdle || out.Metrics.DurationSeconds != 600 {
		t.Fatalf("outcome %+v", out)
	}
}

// A batch job whose work fails every attempt is tried 3 times and marked
// failed with the reason.
func TestFailingJobIsMarkedFailed(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflow(workflows.TranscribeJob)
	j := &workflows.Jobs{}
	env.RegisterActivity(j)
	attempts := 0
	var statuses []string
	env.OnActivity(j.SetStatus, mock.Anything, mock.Anything, mock.Anything, mock.Anything).Return(
		func(_ context.Context, _ workflows.JobInput, status, reason string) error {
			statuses = append(statuses, status+":"+reason)
			return nil
		})
	env.OnActivity(j.Transcribe, mock.Anything, mock.Anything).Return(func(context.Context, workflows.JobInput) error {
		attempts++
		return errors.New("read wav: not a RIFF file")
	})
	env.ExecuteWorkflow(workflows.TranscribeJob, workflows.JobInput{JobID: sessionID, TenantID: tenantID})
	if env.GetWorkflowError() == nil || attempts != 3 {
		t.Fatalf("error %v after %d attempts", env.GetWorkflowError(), attempts)
	}
	if len(statuses) != 2 || statuses[0] != "running:" || !strings.HasPrefix(statuses[1], "failed:") || !strings.Contains(statuses[1], "not a RIFF file") {
		t.Fatalf("statuses %q", statuses)
	}
}

// The maintenance workflows run their activity and return its count.
func TestMaintenanceWorkflows(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	a := &workflows.Activities{}
	env.RegisterActivity(a)
	env.RegisterWorkflow(workflows.CleanupExpiredSessions)
	env.OnActivity(a.ExpireSessions, mock.Anything, workflows.SessionMaxAge).Return(4, nil)
	env.ExecuteWorkflow(workflows.CleanupExpiredSessions)
	var n int
	if err := env.GetWorkflowResult(&n); err != nil || n != 4 {
		t.Fatalf("cleanup: %d %v", n, err)
	}
}

// Signals are delivered at least once: a turn report delivered twice (a
// retried signal whose first try arrived) is counted once.
func TestRepeatedTurnReportCountsOnce(t *testing.T) {
	env := newEnv(t)
	okActivities(env)
	for _, seq := range []int{1, 1, 2, 2, 2} {
		env.RegisterDelayedCallback(func() {
			env.SignalWorkflow(workflows.SignalTurn, workflows.Turn{Call: "c1", Seq: seq, OutputTokens: 9})
		}, time.Duration(seq)*time.Second)
	}
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(workflows.SignalEnd, workflows.End{Status: "completed"}) }, 5*time.Second)
	env.ExecuteWorkflow(workflows.SessionWorkflow, workflows.SessionInput{SessionID: sessionID, TenantID: tenantID})
	if out := outcome(t, env); out.Metrics.Turns != 2 || out.Metrics.OutputTokens != 18 {
		t.Fatalf("outcome %+v", out)
	}
}

// A call whose heartbeats stop while its server still holds it (Temporal
// was unreachable from that server) is not ended; its reports arrive later.
func TestSilentCallStillHeldIsNotLost(t *testing.T) {
	env := newEnv(t)
	okActivities(env)
	var a *workflows.Activities
	asked := 0
	env.OnActivity(a.CallHeld, mock.Anything, mock.Anything).Return(func(context.Context, workflows.CallHeldInput) (bool, error) {
		asked++
		return asked < 3, nil // held through two timeouts, then gone
	})
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(workflows.SignalHeartbeat, nil) }, time.Second)
	env.ExecuteWorkflow(workflows.SessionWorkflow, workflows.SessionInput{SessionID: sessionID, TenantID: tenantID, HeartbeatTimeout: time.Minute})
	out := outcome(t, env)
	if out.Status != "error" || out.Reason != workflows.ReasonLost || asked != 3 {
		t.Fatalf("outcome %+v after asking %d times", out, asked)
	}
	if out.Metrics.DurationSeconds < 180 {
		t.Fatalf("ended after %v s, before the server let the call go", out.Metrics.DurationSeconds)
	}
}

// A live call whose reports are late (heartbeats stopped: Temporal was out
// of its server's reach) is not ended by the idle timeout: the turn it
// reports late still counts.
func TestIdleTimeoutWaitsForLateReports(t *testing.T) {
	env := newEnv(t)
	okActivities(env)
	var a *workflows.Activities
	env.OnActivity(a.CallHeld, mock.Anything, mock.Anything).Return(true, nil).Maybe()
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(workflows.SignalHeartbeat, nil) }, 5*time.Second)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(workflows.SignalTurn, workflows.Turn{Call: "c", Seq: 1, OutputTokens: 9})
		env.SignalWorkflow(workflows.SignalEnd, workflows.End{Status: "completed"})
	}, 100*time.Second)
	env.ExecuteWorkflow(workflows.SessionWorkflow, workflows.SessionInput{SessionID: sessionID, TenantID: tenantID,
		IdleTimeout: 40 * time.Second, HeartbeatTimeout: time.Minute})
	out := outcome(t, env)
	if out.Status != "completed" || out.Reason != "" || out.Metrics.Turns != 1 {
		t.Fatalf("outcome %+v", out)
	}
}

// A call that moves off a draining instance does not end the session: the
// session goes on with the new call's turns (both calls' usage counted),
// and ends when that call ends.
func TestMovedCallGoesOnElsewhere(t *testing.T) {
	env := newEnv(t)
	okActivities(env)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(workflows.SignalTurn, workflows.Turn{Call: "a", Seq: 1, OutputTokens: 5})
	}, 5*time.Second)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(workflows.SignalEnd, workflows.End{Status: "completed", Moved: true, InputAudioSec: 1.5})
	}, 10*time.Second)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(workflows.SignalTurn, workflows.Turn{Call: "b", Seq: 1, OutputTokens: 7, InputAudioSec: 2})
	}, 12*time.Second)
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(workflows.SignalEnd, workflows.End{Status: "completed"}) }, 3*time.Minute)
	env.ExecuteWorkflow(workflows.SessionWorkflow, workflows.SessionInput{SessionID: sessionID, TenantID: tenantID, HeartbeatTimeout: 5 * time.Minute})
	out := outcome(t, env)
	if out.Status != "completed" || out.Metrics.Turns != 2 || out.Metrics.OutputTokens != 12 || out.Metrics.InputAudioSeconds != 3.5 {
		t.Fatalf("outcome %+v", out)
	}
}

// A call that moved and never rejoins ends the session after the heartbeat
// timeout, saying so.
func TestMovedCallThatNeverRejoinsEnds(t *testing.T) {
	env := newEnv(t)
	okActivities(env)
	var a *workflows.Activities
	env.OnActivity(a.CallHeld, mock.Anything, mock.Anything).Return(false, nil)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(workflows.SignalEnd, workflows.End{Status: "completed", Moved: true})
	}, 10*time.Second)
	env.ExecuteWorkflow(workflows.SessionWorkflow, workflows.SessionInput{SessionID: sessionID, TenantID: tenantID, HeartbeatTimeout: time.Minute, Joined: true})
	out := outcome(t, env)
	if out.Status != "error" || out.Reason != workflows.ReasonMovedAway || out.Metrics.DurationSeconds != 70 {
		t.Fatalf("outcome %+v", out)
	}
}
