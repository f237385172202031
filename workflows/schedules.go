package workflows

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// SessionMaxAge is how long a session may stay open before the cleanup
// ends it: past the workflow's own 24 h limit, so it only catches sessions
// whose workflow never ran or was lost.
const SessionMaxAge = 25 * time.Hour

// Schedule is a workflow Temporal runs on a fixed interval.
type Schedule struct {
	ID       string
	Every    time.Duration
	Workflow any
	Queue    string
}

// Schedules are the platform's periodic jobs.
var Schedules = []Schedule{
	{ID: "cleanup_expired_sessions", Every: time.Hour, Workflow: CleanupExpiredSessions, Queue: QueueDefault},
	{ID: "aggregate_metrics", Every: 5 * time.Minute, Workflow: AggregateMetrics, Queue: QueueDefault},
	{ID: "sync_billing_usage", Every: 15 * time.Minute, Workflow: SyncBillingUsage, Queue: QueueBilling},
	{ID: "retain_audit_log", Every: 24 * time.Hour, Workflow: RetainAuditLog, Queue: QueueDefault},
}

// Prepare readies a namespace for the workers: the search attributes and
// the schedules.
func Prepare(ctx context.Context, c client.Client, namespace string, q Queues) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := EnsureSearchAttributes(ctx, c, namespace); err != nil {
		return fmt.Errorf("search attributes: %w", err)
	}
	return EnsureSchedules(ctx, c, q)
}

// EnsureSchedules creates the schedules that do not exist yet; a run that
// is still going when the next is due makes that one skip.
func EnsureSchedules(ctx context.Context, c client.Client, q Queues) error {
	for _, s := range Schedules {
		_, err := c.ScheduleClient().Create(ctx, client.ScheduleOptions{
			ID:      q.Name(s.ID),
			Spec:    client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: s.Every}}},
			Action:  &client.ScheduleWorkflowAction{ID: q.Name(s.ID), Workflow: s.Workflow, TaskQueue: q.Name(s.Queue)},
			Overlap: 1, // SCHEDULE_OVERLAP_POLICY_SKIP
		})
		if err != nil && !errors.Is(err, temporal.ErrScheduleAlreadyRunning) {
			return fmt.Errorf("schedule %s: %w", s.ID, err)
		}
	}
	return nil
}

// maintenance runs one retried activity and returns its count.
func maintenance(ctx workflow.Context, activity any, args ...any) (int, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 5 * time.Minute,
		RetryPolicy:         PostCallRetry,
	})
	var n int
	err := workflow.ExecuteActivity(ctx, activity, args...).Get(ctx, &n)
	return n, err
}

// CleanupExpiredSessions ends the sessions left open past SessionMaxAge and
// returns how many.
func CleanupExpiredSessions(ctx workflow.Context) (int, error) {
	var a *Activities
	return maintenance(ctx, a.ExpireSessions, SessionMaxAge)
}

// AggregateMetrics recomputes the hourly usage totals of the last two hours
// (a late ledger row still lands in its hour) and returns how many it wrote.
func AggregateMetrics(ctx workflow.Context) (int, error) {
	var a *Activities
	return maintenance(ctx, a.RollupUsage, workflow.Now(ctx).Add(-time.Hour))
}

// RetainAuditLog keeps the audit log's monthly partitions ahead of time
// and drops the months every tenant's retention has passed; it returns how
// many months it dropped.
func RetainAuditLog(ctx workflow.Context) (int, error) {
	var a *Activities
	return maintenance(ctx, a.RetainAudit)
}

// auditMonthsAhead is how many months of audit partitions exist ahead.
const auditMonthsAhead = 3

// RetainAudit creates the coming months' audit partitions and drops the
// months past retention (their cut recorded in each tenant's chain).
func (a *Activities) RetainAudit(ctx context.Context) (int, error) {
	if _, err := a.DB.EnsureAuditPartitions(ctx, auditMonthsAhead); err != nil {
		return 0, err
	}
	days, maxDays := a.AuditRetention.Days, a.AuditRetention.MaxDays
	if days == 0 {
		days, maxDays = 90, 365
	}
	return a.DB.RetainAuditLog(ctx, days, maxDays)
}

// ExpireSessions ends sessions open longer than maxAge.
func (a *Activities) ExpireSessions(ctx context.Context, maxAge time.Duration) (int, error) {
	return a.DB.ExpireStaleSessions(ctx, maxAge)
}

// RollupUsage recomputes hourly usage totals from since.
func (a *Activities) RollupUsage(ctx context.Context, since time.Time) (int, error) {
	return a.DB.RollupUsage(ctx, since)
}
