package workflows_test

import (
	"log/slog"
	"testing"

	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"

	"github.com/agentvoicebox/avb/workflows"
)

// A SessionWorkflow history recorded from a real call (a created session,
// its call joining, one turn, the end, the post-call activities) replays
// against the current code: a change that would break running sessions'
// determinism fails here. Re-record it with
// AVB_RECORD_SESSION_HISTORY=$PWD/workflows/testdata/session_history.json go test ./app -run TestCallRunsAsSessionWorkflow$
// when a change is meant to be incompatible (and version it with workflow.GetVersion).
func TestSessionWorkflowReplay(t *testing.T) {
	r := worker.NewWorkflowReplayer()
	r.RegisterWorkflow(workflows.SessionWorkflow)
	if err := r.ReplayWorkflowHistoryFromJSONFile(tlog.NewStructuredLogger(slog.New(slog.DiscardHandler)), "testdata/session_history.json"); err != nil {
		t.Fatal(err)
	}
}
