package server

import (
	"context"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/store"
)

// outboxGrace is how old an unconfirmed session must be before the outbox
// hands it to the reporter: younger ones are still being started by the
// server that created them.
const outboxGrace = 5 * time.Second

// RunWorkflowOutbox hands every open session whose workflow Temporal has not
// confirmed (sessions.workflow_started_at is NULL) to the reporter, every
// interval, until ctx is done. That covers a session created while Temporal
// was unreachable on a server that has since stopped: its workflow starts
// when Temporal returns, so the idle timeout and the 24 h limit apply to it.
// Several servers may run it; starting a workflow twice finds the first.
func (v Voice) RunWorkflowOutbox(ctx context.Context, interval time.Duration) {
	if v.Workflows == nil {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rows, err := v.DB.AwaitingWorkflow(ctx, outboxGrace, 500)
		if err != nil {
			if ctx.Err() == nil {
				v.Log.Debug("session workflow outbox not read", "error", err.Error())
			}
			continue
		}
		for _, r := range rows {
			cfg := &avbv1.SessionConfig{}
			_ = protojson.Unmarshal(r.Config, cfg)
			sess := &store.Session{ID: r.ID, TenantID: r.TenantID, CreatedAt: r.CreatedAt}
			v.Workflows.Ensure(workflowSession(sess, cfg, r.Status == store.SessionActive))
		}
	}
}
