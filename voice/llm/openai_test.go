package llm_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/agentvoicebox/avb/platform/secret"
	"github.com/agentvoicebox/avb/voice/llm"
)

// recordedStream is a chat completions stream as the OpenAI API sends it:
// role chunk, content deltas, a tool call split across chunks, finish, usage.
const recordedStream = `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Sure."},"finish_reason":null}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" Booking it now."},"finish_reason":null}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"book_meeting","arguments":""}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"when\":\"tomorrow 10:00\"}"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":31,"completion_tokens":12,"total_tokens":43}}

data: [DONE]

`

func TestOpenAICompatibleStream(t *testing.T) {
	t.Parallel()
	var got map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" || r.Header.Get("Authorization") != "Bearer sk-test" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}`)
			return
		}
		_ = json.NewDecoder(r.Body).Decode(&got)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, recordedStream)
	}))
	defer srv.Close()

	m := &llm.OpenAI{BaseURL: srv.URL + "/v1", APIKey: secret.New("sk-test"), Model: "gpt-4o-mini"}
	var text strings.Builder
	var calls []llm.ToolCall
	tool := json.RawMessage(`{"type":"function","function":{"name":"book_meeting","parameters":{"type":"object"}}}`)
	u, err := m.Stream(context.Background(), llm.Request{Instructions: "Be brief.", Tools: []json.RawMessage{tool},
		Messages: []llm.Message{{Role: "user", Content: "book a meeting"}}, OnToolCall: func(c llm.ToolCall) { calls = append(calls, c) }},
		func(d string) error { text.WriteString(d); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if text.String() != "Sure. Booking it now." || u.InputTokens != 31 || u.OutputTokens != 12 {
		t.Fatalf("text %q usage %+v", text.String(), u)
	}
	if len(calls) != 1 || calls[0].Name != "book_meeting" || calls[0].Arguments != `{"when":"tomorrow 10:00"}` || calls[0].ID != "call_1" {
		t.Fatalf("tool calls %+v", calls)
	}
	msgs := got["messages"].([]any)
	if got["model"] != "gpt-4o-mini" || got["stream"] != true || len(msgs) != 2 || msgs[0].(map[string]any)["role"] != "system" || len(got["tools"].([]any)) != 1 {
		t.Fatalf("request %v", got)
	}

	bad := &llm.OpenAI{BaseURL: srv.URL + "/v1", APIKey: secret.New("wrong")}
	if _, err := bad.Stream(context.Background(), llm.Request{}, func(string) error { return nil }); err == nil ||
		!strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "Incorrect API key") {
		t.Fatalf("auth failure: %v", err)
	}
}
