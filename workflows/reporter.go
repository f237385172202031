package workflows

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentvoicebox/avb/platform/dependency"
)

// Queues turns task queue (and schedule) names into this platform's: with
// a prefix, several platforms share a namespace without taking each
// other's work.
type Queues struct{ Prefix string }

// Name is a task queue's or schedule's name for this platform.
func (q Queues) Name(name string) string { return q.Prefix + name }

// Workers are the platform's task queue workers, started and stopped together.
type Workers []worker.Worker

// NewWorkers registers every workflow and activity on its task queue:
// sessions and maintenance on default, batch speech jobs on
// voice-processing, billing sync on billing, subscriber events on
// notifications.
func NewWorkers(c client.Client, q Queues, acts *Activities, jobs *Jobs, notes *Notifications, bills *Billing) Workers {
	def := worker.New(c, q.Name(QueueDefault), worker.Options{})
	def.RegisterWorkflow(SessionWorkflow)
	def.RegisterWorkflow(CleanupExpiredSessions)
	def.RegisterWorkflow(AggregateMetrics)
	def.RegisterActivity(acts)
	bill := worker.New(c, q.Name(QueueBilling), worker.Options{})
	bill.RegisterWorkflow(SyncBillingUsage)
	bill.RegisterWorkflow(ProvisionBilling)
	if bills == nil {
		bills = &Billing{}
	}
	bill.RegisterActivity(bills)
	notify := worker.New(c, q.Name(QueueNotifications), worker.Options{})
	notify.RegisterActivity(notes)
	ws := Workers{def, bill, notify}
	if jobs != nil {
		voice := worker.New(c, q.Name(QueueVoice), worker.Options{})
		voice.RegisterWorkflow(TranscribeJob)
		voice.RegisterWorkflow(SynthesizeJob)
		voice.RegisterActivity(jobs)
		ws = append(ws, voice)
	}
	return ws
}

// Start starts every worker; on an error the started ones are stopped.
func (ws Workers) Start() error {
	for i, w := range ws {
		if err := w.Start(); err != nil {
			ws[:i].Stop()
			return err
		}
	}
	return nil
}

// Stop stops every worker.
func (ws Workers) Stop() {
	for _, w := range ws {
		w.Stop()
	}
}

// Session names a session to the reporter, with what its workflow needs to
// start: every report may be the one that starts it.
type Session struct {
	ID, TenantID string
	// IdleTimeout of the session (0: the reporter's default).
	IdleTimeout time.Duration
	// Joined: a call holds the session.
	Joined bool
	// Since is when the session began.
	Since time.Time
}

// Reporter connects sessions to their workflows without ever making a
// caller wait on Temporal. Each session has a lane: its reports (start,
// turns, heartbeats, the end) are delivered in order by a background
// goroutine, and a report Temporal cannot take (down, slow) is retried with
// backoff until it can, so nothing is lost while the process runs. Every
// report starts the workflow if it does not exist yet (signal-with-start),
// so a signal sent before the workflow exists is delivered to it; a workflow
// that already finished is never started again.
//
// What a crash loses is recovered from the database: a session whose
// workflow was never confirmed (sessions.workflow_started_at) is handed to
// Ensure again by the dispatcher (see Started).
type Reporter struct {
	c     client.Client
	log   *slog.Logger
	ctx   context.Context
	guard *dependency.Guard
	// StartTimeout and SignalTimeout bound one attempt.
	StartTimeout, SignalTimeout time.Duration
	// Input defaults for new sessions.
	MaxDuration, IdleTimeout, HeartbeatTimeout time.Duration
	// Queues names the task queues the workers serve.
	Queues Queues
	// Started records that a session's workflow exists (the outbox row is
	// done). It runs once per lane, after the first delivered report.
	Started func(ctx context.Context, s Session) error
	// MaxPending bounds the reports waiting across all sessions; past it
	// turns and heartbeats are dropped (and counted), ends never are.
	MaxPending int

	mu      sync.Mutex
	lanes   map[string]*lane
	pending int
	dropped atomic.Int64
}

type report struct {
	signal string // "" = only make sure the workflow exists
	arg    any
	// delivered runs once Temporal has the report (or refused it for
	// good), or when the reporter stops.
	delivered func()
}

type lane struct {
	s         Session
	reports   []report
	heartbeat bool // a heartbeat is already waiting: heartbeats coalesce
	confirmed bool
}

// NewReporter returns a reporter whose lanes stop when ctx is done; guard
// (nil: none) bounds and breaks every call to Temporal.
func NewReporter(ctx context.Context, c client.Client, guard *dependency.Guard, log *slog.Logger) *Reporter {
	return &Reporter{c: c, log: log, ctx: ctx, guard: guard, lanes: map[string]*lane{}, MaxPending: 100_000,
		StartTimeout: 5 * time.Second, SignalTimeout: 3 * time.Second,
		MaxDuration: 24 * time.Hour, IdleTimeout: 30 * time.Minute, HeartbeatTimeout: time.Minute}
}

// Ensure makes sure the session's workflow exists, in the background.
func (r *Reporter) Ensure(s Session) { r.enqueue(s, report{}) }

// Turn reports a finished turn, without waiting.
func (r *Reporter) Turn(s Session, t Turn) { r.enqueue(s, report{signal: SignalTurn, arg: t}) }

// Heartbeat says the call is alive, without waiting.
func (r *Reporter) Heartbeat(s Session) { r.enqueue(s, report{signal: SignalHeartbeat}) }

// End reports how the session ended, without waiting. delivered (may be
// nil) runs once the workflow has it: a call keeps its call-limit slot
// until then, which tells the workflow its server is alive however long
// Temporal was unreachable.
func (r *Reporter) End(s Session, e End, delivered func()) {
	r.enqueue(s, report{signal: SignalEnd, arg: e, delivered: delivered})
}

// Pending is how many reports wait for Temporal.
func (r *Reporter) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pending
}

// Dropped is how many reports were dropped because MaxPending were waiting.
func (r *Reporter) Dropped() int64 { return r.dropped.Load() }

// Drain waits until every report has been delivered, or ctx is done; it
// returns how many were left. A server stopping calls it before it lets go
// of Temporal, so a short Temporal outage during a deploy loses nothing.
func (r *Reporter) Drain(ctx context.Context) int {
	for {
		n := r.Pending()
		if n == 0 {
			return 0
		}
		select {
		case <-ctx.Done():
			return n
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (r *Reporter) enqueue(s Session, rep report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.lanes[s.ID]
	if l != nil && rep.signal == "" {
		return // a report is already on its way; it starts the workflow
	}
	if l != nil && rep.signal == SignalHeartbeat && l.heartbeat {
		return
	}
	if r.ctx.Err() != nil {
		if rep.delivered != nil {
			rep.delivered()
		}
		return
	}
	if r.pending >= r.MaxPending && rep.signal != SignalEnd {
		r.dropped.Add(1)
		r.log.Error("session workflow reports are backed up; report dropped", "session_id", s.ID, "signal", rep.signal)
		return
	}
	r.pending++
	if l == nil {
		l = &lane{s: s}
		r.lanes[s.ID] = l
		go r.run(l)
	}
	if s.Joined {
		l.s.Joined = true
	}
	if rep.signal == SignalHeartbeat {
		l.heartbeat = true
	}
	l.reports = append(l.reports, rep)
}

// run delivers a lane's reports in order, then retires the lane.
func (r *Reporter) run(l *lane) {
	for {
		r.mu.Lock()
		if len(l.reports) == 0 {
			delete(r.lanes, l.s.ID)
			r.mu.Unlock()
			return
		}
		rep, s := l.reports[0], l.s
		r.mu.Unlock()
		if !r.deliver(s, rep) {
			// Stopping: the outbox and the workflow's own timeouts finish
			// the job after a restart.
			for _, p := range l.reports {
				if p.delivered != nil {
					p.delivered()
				}
			}
			return
		}
		if rep.delivered != nil {
			rep.delivered()
		}
		if !l.confirmed && r.Started != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), r.StartTimeout)
			if err := r.Started(sctx, s); err != nil {
				r.log.Warn("session workflow started but not recorded; the dispatcher will check it again", "session_id", s.ID, "error", err.Error())
			}
			cancel()
		}
		l.confirmed = true
		r.mu.Lock()
		l.reports = l.reports[1:]
		r.pending--
		if rep.signal == SignalHeartbeat {
			l.heartbeat = false
			for _, p := range l.reports {
				l.heartbeat = l.heartbeat || p.signal == SignalHeartbeat
			}
		}
		r.mu.Unlock()
	}
}

// deliver sends one report until Temporal takes it or refuses it for good.
// It returns false when the reporter is stopping.
func (r *Reporter) deliver(s Session, rep report) bool {
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		err := r.send(s, rep)
		var started *serviceerror.WorkflowExecutionAlreadyStarted
		var notFound *serviceerror.NotFound
		switch {
		case err == nil:
			return true
		case errors.As(err, &started), errors.As(err, &notFound):
			return true // the workflow finished already: nothing more to tell it
		case !retryable(err):
			r.log.Error("session workflow report refused; dropped", "session_id", s.ID, "signal", rep.signal, "error", err.Error())
			return true
		}
		select {
		case <-r.ctx.Done():
			r.log.Warn("stopping with a session workflow report undelivered", "session_id", s.ID, "signal", rep.signal)
			return false
		case <-time.After(delay + time.Duration(rand.Int64N(int64(delay/2)))):
		}
	}
}

// retryable: Temporal could not take the report now (unreachable, slow,
// overloaded), as opposed to refusing it.
func retryable(err error) bool {
	if errors.Is(err, dependency.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || dependency.IsConnectionError(err) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	var busy *serviceerror.ResourceExhausted
	var unavailable *serviceerror.Unavailable
	var timeout *serviceerror.DeadlineExceeded
	return errors.As(err, &busy) || errors.As(err, &unavailable) || errors.As(err, &timeout)
}

func (r *Reporter) input(s Session) SessionInput {
	idle := s.IdleTimeout
	if idle <= 0 {
		idle = r.IdleTimeout
	}
	return SessionInput{SessionID: s.ID, TenantID: s.TenantID, NotificationsQueue: r.Queues.Name(QueueNotifications),
		MaxDuration: r.MaxDuration, IdleTimeout: idle, HeartbeatTimeout: r.HeartbeatTimeout, Joined: s.Joined, Since: s.Since}
}

// send makes one attempt at a report.
func (r *Reporter) send(s Session, rep report) error {
	opts := client.StartWorkflowOptions{
		ID:                       s.ID,
		TaskQueue:                r.Queues.Name(QueueDefault),
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		// A session's workflow runs once: a report that comes after its end
		// must not start a second one.
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		TypedSearchAttributes: temporal.NewSearchAttributes(SearchAttributeTenant.ValueSet(s.TenantID)),
	}
	timeout := r.SignalTimeout
	call := func(ctx context.Context) error {
		_, err := r.c.SignalWithStartWorkflow(ctx, s.ID, rep.signal, rep.arg, opts, SessionWorkflow, r.input(s))
		return err
	}
	if rep.signal == "" {
		timeout = r.StartTimeout
		call = func(ctx context.Context) error {
			_, err := r.c.ExecuteWorkflow(ctx, opts, SessionWorkflow, r.input(s))
			return err
		}
	}
	ctx := context.WithoutCancel(r.ctx)
	if r.guard == nil {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return call(ctx)
	}
	return r.guard.Do(ctx, timeout, call)
}

// EnsureSearchAttributes declares the search attributes session workflows
// carry in the namespace; declaring one that exists changes nothing.
func EnsureSearchAttributes(ctx context.Context, c client.Client, namespace string) error {
	_, err := c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace:        namespace,
		SearchAttributes: map[string]enumspb.IndexedValueType{SearchAttributeTenant.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD},
	})
	var exists *serviceerror.AlreadyExists
	if errors.As(err, &exists) {
		return nil
	}
	return err
}
