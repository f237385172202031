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
	// Call and Seq identify the report: signals are delivered at least
	// once, and a turn seen again (same call, a Seq already counted) is
	// ignored. Seq 0 (older servers) is always counted.
	Call            string
	Seq             int
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
	// ToolCalls is how many tools the model called in the turn; ToolMS the
	// time spent waiting on them.
	ToolCalls int
	ToolMS    float64
	At        time.Time
}

// End is how the call ended, reported by the call loop.
type End struct {
	Status string // completed, error, terminated
	Reason string
	// InputAudioSec is caller audio received since the last turn.
	InputAudioSec float64
	// Moved: the call left its instance (which drained) to rejoin on
	// another; the session goes on. Nobody rejoining within the heartbeat
	// timeout ends it as ReasonMovedAway.
	Moved bool
}

// Metrics are the session's totals, kept by the workflow.
type Metrics struct {
	Turns              int
	ToolCalls          int
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
	ReasonMovedAway   = "call moved off a draining server and did not rejoin"
)

// turnsSeen is the highest turn number counted per call.
type turnsSeen map[string]int

// first reports whether t is counted for the first time (and records it).
func (s turnsSeen) first(t Turn) bool {
	if t.Seq == 0 {
		return true
	}
	if t.Seq <= s[t.Call] {
		return false
	}
	s[t.Call] = t.Seq
	return true
}

// maxUnknownHeld is how many heartbeat timeouts in a row a silent call is
// given the benefit of the doubt when nobody can say whether its server
// holds it (the call-limit store is unreachable too).
const maxUnknownHeld = 10

// callHeld asks whether a server still holds the session's call; known is
// false when the answer could not be had. Histories from before the
// question existed ended the call at once, and replay so.
func callHeld(ctx workflow.Context, in SessionInput) (held, known bool) {
	if workflow.GetVersion(ctx, "call-held-check", workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return false, true
	}
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy:         PostCallRetry,
	})
	var a *Activities
	if err := workflow.ExecuteActivity(actx, a.CallHeld, CallHeldInput{SessionID: in.SessionID, TenantID: in.TenantID}).Get(ctx, &held); err != nil {
		return false, false
	}
	return held, true
}

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
	seen := turnsSeen{}
	if err := workflow.SetQueryHandler(ctx, QueryMetrics, func() (Metrics, error) { return m, nil }); err != nil {
		return Outcome{}, err
	}
	turns := workflow.GetSignalChannel(ctx, SignalTurn)
	beats := workflow.GetSignalChannel(ctx, SignalHeartbeat)
	ends := workflow.GetSignalChannel(ctx, SignalEnd)

	deadline := started.Add(in.MaxDuration)
	lastActivity, lastBeat := workflow.Now(ctx), workflow.Now(ctx)
	live := in.Joined // a call has joined and reports heartbeats
	// heard is when the call last reported (lastBeat also moves when its
	// server is found to still hold it). A live call that has not reported
	// for half the heartbeat timeout is late: its reports are held up, so
	// silence is no proof nobody spoke, and the idle timeout waits.
	heard := lastBeat
	unknown := 0   // heartbeat timeouts at which nobody could say whether the call is held
	moved := false // the last call left to rejoin elsewhere, and none has yet
	late := func(now time.Time) bool {
		return live && in.HeartbeatTimeout > 0 && now.Sub(heard) > in.HeartbeatTimeout/2
	}
	var out Outcome
	for out.Status == "" {
		// Wake at the earliest of: the 24 h limit, the idle timeout, the heartbeat timeout.
		wake := deadline
		idleAt := lastActivity.Add(in.IdleTimeout)
		if late(workflow.Now(ctx)) && !idleAt.After(workflow.Now(ctx)) {
			// The call's reports are late: someone may have spoken. Wait
			// for them, or for the heartbeat timeout to decide.
			idleAt = lastBeat.Add(in.HeartbeatTimeout)
		}
		if in.IdleTimeout > 0 && idleAt.Before(wake) {
			wake = idleAt
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
			lastActivity, lastBeat, heard, live = workflow.Now(ctx), workflow.Now(ctx), workflow.Now(ctx), true
			moved = false
			if !seen.first(t) {
				return
			}
			m.Turns++
			m.ToolCalls += t.ToolCalls
			m.InputTokens += t.InputTokens
			m.OutputTokens += t.OutputTokens
			m.InputAudioSeconds += t.InputAudioSec
			m.OutputAudioSeconds += t.OutputAudioSec
			transcript = append(transcript, t)
		})
		sel.AddReceive(beats, func(c workflow.ReceiveChannel, _ bool) {
			c.Receive(ctx, nil)
			lastBeat, heard, live, moved = workflow.Now(ctx), workflow.Now(ctx), true, false
		})
		sel.AddReceive(ends, func(c workflow.ReceiveChannel, _ bool) {
			var e End
			c.Receive(ctx, &e)
			m.InputAudioSeconds += e.InputAudioSec
			if e.Moved {
				// The call left to rejoin elsewhere: its new call's
				// heartbeats keep the session; their absence ends it.
				moved = true
				lastBeat, heard, live = workflow.Now(ctx), workflow.Now(ctx), true
				return
			}
			out.Status, out.Reason = e.Status, e.Reason
		})
		silent := false
		sel.AddFuture(timer, func(workflow.Future) {
			now := workflow.Now(ctx)
			switch {
			case !now.Before(deadline):
				out.Status, out.Reason = "terminated", ReasonMaxDuration
			case live && in.HeartbeatTimeout > 0 && !now.Before(lastBeat.Add(in.HeartbeatTimeout)):
				silent = true
			case in.IdleTimeout > 0 && !now.Before(lastActivity.Add(in.IdleTimeout)) && !late(now):
				out.Status, out.Reason = "completed", ReasonIdle
			}
		})
		sel.Select(ctx)
		cancelTimer()
		if silent {
			// No heartbeat: the call's server died, or it cannot reach
			// Temporal. A server that lives keeps the call's slot (until
			// the call's end has been delivered), so ask before ending.
			held, known := callHeld(ctx, in)
			if !known {
				unknown++
			}
			if held || (!known && unknown <= maxUnknownHeld) {
				lastBeat = workflow.Now(ctx)
			} else {
				out.Status, out.Reason = "error", ReasonLost
				if moved {
					out.Reason = ReasonMovedAway
				}
			}
		}
	}
	// Turns signalled together with the end are not lost.
	for {
		var t Turn
		if !turns.ReceiveAsync(&t) {
			break
		}
		if !seen.first(t) {
			continue
		}
		m.Turns++
		m.ToolCalls += t.ToolCalls
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
