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

// A recorded exchange with two parallel tool calls, their argument
// fragments interleaved as OpenAI streams them.
const parallelStream = `data: {"id":"chatcmpl-2","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"check_calendar","arguments":""}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-2","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"day\":"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-2","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-2","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-2","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"tomorrow\"}"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-2","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}

data: {"id":"chatcmpl-2","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":40,"completion_tokens":25,"total_tokens":65}}

data: [DONE]

`

// Parallel tool calls are assembled from interleaved fragments, in index
// order; the turn that carries their results back sends the assistant's
// tool calls and one tool message per result, as the API expects.
func TestOpenAIParallelToolCallsAndResults(t *testing.T) {
	var got []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		got = append(got, body)
		w.Header().Set("Content-Type", "text/event-stream")
		if len(got) == 1 {
			_, _ = io.WriteString(w, parallelStream)
			return
		}
		_, _ = io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Tomorrow is free and sunny.\"}}]}\n\ndata: [DONE]\n\n")
	}))
	defer srv.Close()
	m := &llm.OpenAI{BaseURL: srv.URL + "/v1", Model: "gpt-4o-mini"}
	var calls []llm.ToolCall
	msgs := []llm.Message{{Role: "user", Content: "am I free tomorrow, and will it rain in Paris?"}}
	if _, err := m.Stream(context.Background(), llm.Request{Messages: msgs, OnToolCall: func(c llm.ToolCall) { calls = append(calls, c) }},
		func(string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	want := []llm.ToolCall{{ID: "call_a", Name: "check_calendar", Arguments: `{"day":"tomorrow"}`}, {ID: "call_b", Name: "get_weather", Arguments: `{"city":"Paris"}`}}
	if len(calls) != 2 || calls[0] != want[0] || calls[1] != want[1] {
		t.Fatalf("calls %+v, want %+v", calls, want)
	}
	msgs = append(msgs, llm.Message{Role: "assistant", ToolCalls: calls},
		llm.Message{Role: "tool", ToolCallID: "call_a", Content: `{"free":true}`},
		llm.Message{Role: "tool", ToolCallID: "call_b", Content: `{"rain":false}`})
	var text strings.Builder
	if _, err := m.Stream(context.Background(), llm.Request{Messages: msgs}, func(d string) error { text.WriteString(d); return nil }); err != nil {
		t.Fatal(err)
	}
	if text.String() != "Tomorrow is free and sunny." {
		t.Fatalf("reply %q", text.String())
	}
	sent, _ := json.Marshal(got[1]["messages"])
	wantSent := `[{"content":"am I free tomorrow, and will it rain in Paris?","role":"user"},` +
		`{"content":"","role":"assistant","tool_calls":[{"function":{"arguments":"{\"day\":\"tomorrow\"}","name":"check_calendar"},"id":"call_a","type":"function"},` +
		`{"function":{"arguments":"{\"city\":\"Paris\"}","name":"get_weather"},"id":"call_b","type":"function"}]},` +
		`{"content":"{\"free\":true}","role":"tool","tool_call_id":"call_a"},{"content":"{\"rain\":false}","role":"tool","tool_call_id":"call_b"}]`
	if string(sent) != wantSent {
		t.Fatalf("the results turn sent\n%s\nwant\n%s", sent, wantSent)
	}
}
