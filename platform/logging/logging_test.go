package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/agentvoicebox/avb/platform/logging"
)

func TestLinesCarryRequestTenantAndUser(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := logging.New(&buf, "json", "info")
	ctx, f := logging.WithFields(context.Background(), "req-1")
	f.SetTenant("tenant-a")
	f.SetUser("user-b")
	log.InfoContext(ctx, "hello", "k", "v")
	log.DebugContext(ctx, "hidden")

	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %q", buf.String())
	}
	for k, want := range map[string]string{"msg": "hello", "request_id": "req-1", "tenant_id": "tenant-a", "user_id": "user-b", "k": "v"} {
		if line[k] != want {
			t.Errorf("%s = %v, want %q", k, line[k], want)
		}
	}
}

func TestNoFieldsWithoutRequest(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logging.New(&buf, "json", "info").Info("boot")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if _, ok := line["request_id"]; ok {
		t.Fatalf("request_id outside a request: %v", line)
	}
}
