package workflows

import (
	"context"
	"errors"
	"log/slog"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
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
func NewWorkers(c client.Client, q Queues, acts *Activities, jobs *Jobs, notes *Notifications) Workers {
	def := worker.New(c, q.Name(QueueDefault), worker.Options{})
	def.RegisterWorkflow(SessionWorkflow)
	def.RegisterWorkflow(CleanupExpiredSessions)
	def.RegisterWorkflow(AggregateMetrics)
	def.RegisterActivity(acts)
	bill := worker.New(c, q.Name(QueueBilling), worker.Options{})
	bill.RegisterWorkflow(SyncBillingUsage)
	bill.RegisterActivity(acts.SyncBilling)
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

// Reporter connects live calls to their session workflows. Starting a
// workflow is one round trip when a call opens; everything after that (turns,
// heartbeats, the end) is a signal queued here and sent by a background
// goroutine, so the media path never waits on Temporal.
type Reporter struct {
	c     client.Client
	log   *slog.Logger
	queue chan func(context.Context)
	// Input defaults for new sessions.
	MaxDuration, IdleTimeout, HeartbeatTimeout time.Duration
	// Queues names the task queues the workers serve.
	Queues Queues
}

// NewReporter starts the sender goroutine; it stops when ctx is done.
func NewReporter(ctx context.Context, c client.Client, log *slog.Logger) *Reporter {
	r := &Reporter{c: c, log: log, queue: make(chan func(context.Context), 4096),
		MaxDuration: 24 * time.Hour, IdleTimeout: 30 * time.Minute, HeartbeatTimeout: time.Minute}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case send := <-r.queue:
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				send(sctx)
				cancel()
			}
		}
	}()
	return r
}

// Start starts the session's workflow (workflow id = session id), or finds
// it running: CreateSession starts it, and the call that joins the session
// later gets the same run. idleTimeout of 0 takes the reporter's default.
func (r *Reporter) Start(ctx context.Context, sessionID, tenantID string, idleTimeout time.Duration) error {
	if idleTimeout <= 0 {
		idleTimeout = r.IdleTimeout
	}
	_, err := r.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       sessionID,
		TaskQueue:                r.Queues.Name(QueueDefault),
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		TypedSearchAttributes:    temporal.NewSearchAttributes(SearchAttributeTenant.ValueSet(tenantID)),
	}, SessionWorkflow, SessionInput{SessionID: sessionID, TenantID: tenantID, NotificationsQueue: r.Queues.Name(QueueNotifications),
		MaxDuration: r.MaxDuration, IdleTimeout: idleTimeout, HeartbeatTimeout: r.HeartbeatTimeout})
	return err
}

func (r *Reporter) signal(sessionID, name string, arg any) {
	select {
	case r.queue <- func(ctx context.Context) {
		if err := r.c.SignalWorkflow(ctx, sessionID, "", name, arg); err != nil {
			r.log.Warn("signal session workflow", "session_id", sessionID, "signal", name, "error", err.Error())
		}
	}:
	default:
		r.log.Error("session workflow signals are backed up; signal dropped", "session_id", sessionID, "signal", name)
	}
}

// Turn reports a finished turn, without waiting.
func (r *Reporter) Turn(sessionID string, t Turn) { r.signal(sessionID, SignalTurn, t) }

// Heartbeat says the call is alive, without waiting.
func (r *Reporter) Heartbeat(sessionID string) { r.signal(sessionID, SignalHeartbeat, nil) }

// End reports how the call ended, without waiting.
func (r *Reporter) End(sessionID string, e End) { r.signal(sessionID, SignalEnd, e) }

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
