// Package workflows holds the Temporal side of the platform. SessionWorkflow
// is the durable record of one call: the call loop reports each finished turn
// to it with a signal (never waiting for it), and the workflow keeps the
// metrics, enforces the 24-hour limit and the idle timeout, notices a call
// whose server died, and runs the post-call activities with retries.
package workflows

import (
	"errors"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// Task queues (their names; a deployment may prefix them, see Queues).
const (
	QueueDefault       = "default"
	QueueVoice         = "voice-processing"
	QueueBilling       = "billing"
	QueueNotifications = "notifications"
)

// SearchAttributeTenant holds the tenant id of every session workflow, so
// operators can list one tenant's calls (AvbTenantId = '...'). The Temporal
// namespace must declare it as a Keyword attribute (avb dev and the test
// servers do; see docs/architecture.md for a production cluster).
var SearchAttributeTenant = temporal.NewSearchAttributeKeyKeyword("AvbTenantId")

// Signal and query names of SessionWorkflow.
const (
	SignalTurn      = "turn"
	SignalHeartbeat = "heartbeat"
	SignalEnd       = "end"
	QueryMetrics    = "metrics"
)

// SessionInput starts a SessionWorkflow (workflow id = session id).
type SessionInput struct {
	SessionID string
	TenantID  string
	// MaxDuration ends the session however active it is (24 h).
	MaxDuration time.Duration
	// IdleTimeout ends a session in which nobody spoke for this long.
	IdleTimeout time.Duration
	// NotificationsQueue is where its end is announced ("": QueueNotifications).
	NotificationsQueue string
	// HeartbeatTimeout ends, as an error, a session whose call stopped
	// reporting (its server died). It applies once a call has joined the
	// session (its first heartbeat or turn); a session created and not yet
	// joined waits for its idle timeout.
	HeartbeatTimeout time.Duration
	// Joined: a call already holds the session (its workflow starts late,
	// after Temporal was unreachable), so the heartbeat timeout applies
	// from the start.
	Joined bool
	// Since is when the session began, when that was before the workflow
	// started; the maximum duration and the session's duration count from
	// it. Zero: the workflow's start.
	Since time.Time
}

// Turn is one finished conversational turn, reported by the call loop.
type Turn struct {
	Transcript      string
	Reply           string
	InputTokens     int64
	OutputTokens    int64
	InputAudioSec   float64
	OutputAudioSec  float64
	Interrupted     bool
	FirstByteMS     float64
	LLMFirstTokenMS float64
	TTSFirstAudioMS float64
	STTFinalMS      float64
	At              time.Time
}

// End is how the call ended, reported by the call loop.
type End struct {
	Status string // completed, error, terminated
	Reason string
	// InputAudioSec is caller audio received since the last turn.
	InputAudioSec float64
}

// Metrics are the session's totals, kept by the workflow.
type Metrics struct {
	Turns              int
	InputTokens        int64
	OutputTokens       int64
	InputAudioSeconds  float64
	OutputAudioSeconds float64
	DurationSeconds    float64
}

// Outcome is what the workflow decided and recorded.
type Outcome struct {
	Status  string
	Reason  string
	Metrics Metrics
}

// Session end reasons decided by the workflow.
const (
	ReasonMaxDuration = "session reached its maximum duration"
	ReasonIdle        = "session idle timeout"
	ReasonLost        = "call lost: its server stopped reporting"
)

// PostCallRetry is the retry policy of the post-call activities: 3 attempts
// with exponential backoff.
var PostCallRetry = &temporal.RetryPolicy{
	InitialInterval:    time.Second,
	BackoffCoefficient: 2,
	MaximumInterval:    30 * time.Second,
	MaximumAttempts:    3,
}

// SessionWorkflow is the durable life of one session.
func SessionWorkflow(ctx workflow.Context, in SessionInput) (Outcome, error) {
	if in.MaxDuration <= 0 {
		in.MaxDuration = 24 * time.Hour
	}
	started := workflow.Now(ctx)
	if !in.Since.IsZero() && in.Since.Before(started) {
		started = in.Since
	}
	var m Metrics
	var transcript []Turn
	if err := workflow.SetQueryHandler(ctx, QueryMetrics, func() (Metrics, error) { return m, nil }); err != nil {
		return Outcome{}, err
	}
	turns := workflow.GetSignalChannel(ctx, SignalTurn)
	beats := workflow.GetSignalChannel(ctx, SignalHeartbeat)
	ends := workflow.GetSignalChannel(ctx, SignalEnd)

	deadline := started.Add(in.MaxDuration)
	lastActivity, lastBeat := workflow.Now(ctx), workflow.Now(ctx)
	live := in.Joined // a call has joined and reports heartbeats
	var out Outcome
	for out.Status == "" {
		// Wake at the earliest of: the 24 h limit, the idle timeout, the heartbeat timeout.
		wake := deadline
		if in.IdleTimeout > 0 && lastActivity.Add(in.IdleTimeout).Before(wake) {
			wake = lastActivity.Add(in.IdleTimeout)
		}
		if live && in.HeartbeatTimeout > 0 && lastBeat.Add(in.HeartbeatTimeout).Before(wake) {
			wake = lastBeat.Add(in.HeartbeatTimeout)
		}
		timerCtx, cancelTimer := workflow.WithCancel(ctx)
		timer := workflow.NewTimer(timerCtx, wake.Sub(workflow.Now(ctx)))
		sel := workflow.NewSelector(ctx)
		sel.AddReceive(turns, func(c workflow.ReceiveChannel, _ bool) {
			var t Turn
			c.Receive(ctx, &t)
			m.Turns++
			m.InputTokens += t.InputTokens
			m.OutputTokens += t.OutputTokens
			m.InputAudioSeconds += t.InputAudioSec
			m.OutputAudioSeconds += t.OutputAudioSec
			transcript = append(transcript, t)
			lastActivity, lastBeat, live = workflow.Now(ctx), workflow.Now(ctx), true
		})
		sel.AddReceive(beats, func(c workflow.ReceiveChannel, _ bool) {
			c.Receive(ctx, nil)
			lastBeat, live = workflow.Now(ctx), true
		})
		sel.AddReceive(ends, func(c workflow.ReceiveChannel, _ bool) {
			var e End
			c.Receive(ctx, &e)
			out.Status, out.Reason = e.Status, e.Reason
			m.InputAudioSeconds += e.InputAudioSec
		})
		sel.AddFuture(timer, func(workflow.Future) {
			now := workflow.Now(ctx)
			switch {
			case !now.Before(deadline):
				out.Status, out.Reason = "terminated", ReasonMaxDuration
			case live && in.HeartbeatTimeout > 0 && !now.Before(lastBeat.Add(in.HeartbeatTimeout)):
				out.Status, out.Reason = "error", ReasonLost
			case in.IdleTimeout > 0 && !now.Before(lastActivity.Add(in.IdleTimeout)):
				out.Status, out.Reason = "completed", ReasonIdle
			}
		})
		sel.Select(ctx)
		cancelTimer()
	}
	// Turns signalled together with the end are not lost.
	for {
		var t Turn
		if !turns.ReceiveAsync(&t) {
			break
		}
		m.Turns++
		m.InputTokens += t.InputTokens
		m.OutputTokens += t.OutputTokens
		m.InputAudioSeconds += t.InputAudioSec
		m.OutputAudioSeconds += t.OutputAudioSec
		transcript = append(transcript, t)
	}
	m.DurationSeconds = workflow.Now(ctx).Sub(started).Seconds()
	out.Metrics = m

	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		RetryPolicy:         PostCallRetry,
	})
	var a *Activities
	var errs []error
	if err := workflow.ExecuteActivity(actx, a.FinalizeSession, FinalizeInput{SessionID: in.SessionID, TenantID: in.TenantID, Outcome: out}).Get(ctx, nil); err != nil {
		errs = append(errs, err)
	}
	if err := workflow.ExecuteActivity(actx, a.RecordUsage, UsageInput{SessionID: in.SessionID, TenantID: in.TenantID, Metrics: m}).Get(ctx, nil); err != nil {
		errs = append(errs, err)
	}
	if err := workflow.ExecuteActivity(actx, a.StoreTranscript, TranscriptInput{SessionID: in.SessionID, TenantID: in.TenantID, Turns: transcript}).Get(ctx, nil); err != nil {
		errs = append(errs, err)
	}
	// Subscribers hear of the end on the notifications queue; a notification
	// that cannot be delivered in 10 minutes is given up, not the session.
	if in.NotificationsQueue == "" {
		in.NotificationsQueue = QueueNotifications
	}
	nctx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue: in.NotificationsQueue, ScheduleToCloseTimeout: 10 * time.Minute, StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: PostCallRetry,
	})
	var n *Notifications
	ended := SessionEndedInput{SessionID: in.SessionID, TenantID: in.TenantID, Outcome: out, At: workflow.Now(ctx)}
	if err := workflow.ExecuteActivity(nctx, n.SessionEnded, ended).Get(ctx, nil); err != nil {
		workflow.GetLogger(ctx).Warn("session end not notified", "session_id", in.SessionID, "error", err)
	}
	return out, errors.Join(errs...)
}
