package server

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/agentvoicebox/avb/apierror"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/platform/egress"
	"github.com/agentvoicebox/avb/voice"
	"github.com/agentvoicebox/avb/voice/llm"
	"github.com/agentvoicebox/avb/voice/tools"
)

// Tools are the dependencies of webhook tools.
type Tools struct {
	// Webhooks calls webhook tools (nil: they fail with an error result).
	Webhooks *tools.Webhooks
	// Secrets returns the tenant's webhook signing secrets, the current
	// one first (and the previous one during its grace period).
	Secrets func(ctx context.Context) ([]string, error)
	// RequireHTTPS refuses http webhook URLs (the prod profile).
	RequireHTTPS bool
}

// compileTools turns a configuration's tools into the engine's, refusing
// with a field violation (under prefix: "config.tools", "persona.tools")
// a schema that does not compile, a webhook without a callable URL, or a
// transfer without a target.
func compileTools(prefix string, in []*avbv1.Tool, requireHTTPS bool, guard *egress.Guard) ([]tools.Tool, error) {
	if guard == nil {
		guard = &egress.Guard{}
	}
	var out []tools.Tool
	seen := map[string]bool{}
	for i, pt := range in {
		field := fmt.Sprintf("%s[%d]", prefix, i)
		if seen[pt.GetName()] {
			return nil, apierror.Field(field+".name", "two tools are named "+pt.GetName())
		}
		seen[pt.GetName()] = true
		var params json.RawMessage
		if pt.GetParameters() != nil {
			b, err := protojson.Marshal(pt.GetParameters())
			if err != nil {
				return nil, apierror.Field(field+".parameters", "not a JSON object")
			}
			params = b
		}
		t := tools.Tool{Name: pt.GetName(), Description: pt.GetDescription(), Parameters: params,
			Timeout: time.Duration(pt.GetTimeoutMs()) * time.Millisecond, Idempotent: pt.GetIdempotent(),
			URL: pt.GetUrl(), Target: pt.GetTransferTarget()}
		switch pt.GetKind() {
		case avbv1.ToolKind_TOOL_KIND_WEBHOOK:
			t.Kind = tools.Webhook
			// Literal addresses are refused here; names when dialed.
			if _, err := guard.CheckURL(t.URL, requireHTTPS); err != nil {
				return nil, apierror.Field(field+".url", strings.TrimPrefix(err.Error(), egress.ErrRefused.Error()+": "))
			}
		case avbv1.ToolKind_TOOL_KIND_END_CALL:
			t.Kind = tools.EndCall
		case avbv1.ToolKind_TOOL_KIND_TRANSFER:
			t.Kind = tools.Transfer
			if strings.TrimSpace(t.Target) == "" {
				return nil, apierror.Field(field+".transfer_target", "a transfer tool needs a target")
			}
		}
		compiled, err := tools.New(t)
		if err != nil {
			return nil, apierror.Field(field+".parameters", strings.TrimPrefix(err.Error(), "tool "+t.Name+": "))
		}
		out = append(out, compiled)
	}
	return out, nil
}

// guard is the egress guard webhook URLs are checked with.
func (t Tools) guard() *egress.Guard {
	if t.Webhooks == nil {
		return nil
	}
	return t.Webhooks.Guard
}

// sessionTools runs one session's webhook tools, signed with its tenant's
// secret; the context carries the tenant.
type sessionTools struct {
	deps      Tools
	sessionID string
}

func (s sessionTools) RunTool(ctx context.Context, t tools.Tool, call llm.ToolCall) (string, error) {
	if s.deps.Webhooks == nil || s.deps.Secrets == nil {
		return "", fmt.Errorf("webhook tools are not configured on this server")
	}
	secrets, err := s.deps.Secrets(ctx)
	if err != nil {
		return "", fmt.Errorf("the webhook signing secret is unavailable: %w", err)
	}
	return s.deps.Webhooks.Call(ctx, t, secrets, tools.WebhookCall{SessionID: s.sessionID, CallID: call.ID,
		Arguments: json.RawMessage(orEmptyObject(call.Arguments))})
}

func orEmptyObject(s string) string {
	if strings.TrimSpace(s) == "" {
		return "{}"
	}
	return s
}

// toolKind is the contract's name of an engine tool kind.
func toolKind(k tools.Kind) avbv1.ToolKind {
	switch k {
	case tools.Webhook:
		return avbv1.ToolKind_TOOL_KIND_WEBHOOK
	case tools.EndCall:
		return avbv1.ToolKind_TOOL_KIND_END_CALL
	case tools.Transfer:
		return avbv1.ToolKind_TOOL_KIND_TRANSFER
	}
	return avbv1.ToolKind_TOOL_KIND_CLIENT
}

// observeTool records a tool event (arguments and results redacted and
// truncated) and counts finished calls; it returns the event for the client.
func (s *voiceServer) observeTool(l *liveCall, ev voice.Event, record func(string, map[string]any)) *avbv1.VoiceEvent {
	t := ev.Tool
	switch ev.Type {
	case voice.ToolCallStarted:
		record("tool_call", map[string]any{"call_id": t.ID, "name": t.Name, "kind": t.Kind.String(),
			"arguments": tools.Redact(t.Arguments), "response_id": ev.ResponseID})
		return &avbv1.VoiceEvent{Event: &avbv1.VoiceEvent_ToolCall{ToolCall: &avbv1.ToolCall{ResponseId: int32(ev.ResponseID),
			CallId: t.ID, Name: t.Name, Arguments: t.Arguments, Kind: toolKind(t.Kind)}}}
	case voice.ToolCallDone:
		l.mu.Lock()
		l.metrics.ToolCalls++
		l.mu.Unlock()
		record("tool_result", map[string]any{"call_id": t.ID, "name": t.Name, "kind": t.Kind.String(), "outcome": t.Outcome,
			"result": tools.Redact(t.Output), "latency_ms": ms(t.Latency), "response_id": ev.ResponseID})
		if s.Metrics != nil {
			s.Metrics.ToolCalls.WithLabelValues(t.Kind.String(), t.Outcome).Inc()
			s.Metrics.ToolCallDuration.WithLabelValues(t.Kind.String()).Observe(t.Latency.Seconds())
		}
		return &avbv1.VoiceEvent{Event: &avbv1.VoiceEvent_ToolCallDone{ToolCallDone: &avbv1.ToolCallDone{ResponseId: int32(ev.ResponseID),
			CallId: t.ID, Name: t.Name, Outcome: t.Outcome, LatencyMs: ms(t.Latency)}}}
	case voice.TransferRequested:
		record("transfer", map[string]any{"call_id": t.ID, "target": t.Target})
		return &avbv1.VoiceEvent{Event: &avbv1.VoiceEvent_Transfer{Transfer: &avbv1.Transfer{CallId: t.ID, Target: t.Target}}}
	}
	return nil
}
