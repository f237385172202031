package llm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"

	"github.com/agentvoicebox/avb/platform/secret"
)

// OpenAI streams chat completions from any server speaking the OpenAI chat
// completions API: OpenAI itself, vLLM, Ollama, llama.cpp's server.
type OpenAI struct {
	BaseURL string        // e.g. https://api.openai.com/v1 or http://localhost:11434/v1
	APIKey  *secret.Value // nil: no Authorization header
	Model   string        // used when the request names none
	Client  *http.Client
}

type chatMessage struct {
	Role       string         `json:"role"`
	Content    string         `json:"content"`
	ToolCalls  []chatToolCall `json:"tool_calls,omitempty"`
	ToolCallID string         `json:"tool_call_id,omitempty"`
}

type chatToolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type chatRequest struct {
	Model         string            `json:"model"`
	Messages      []chatMessage     `json:"messages"`
	Stream        bool              `json:"stream"`
	StreamOptions map[string]bool   `json:"stream_options,omitempty"`
	Tools         []json.RawMessage `json:"tools,omitempty"`
}

type chatChunk struct {
	Choices []struct {
		Delta struct {
			Content   string `json:"content"`
			ToolCalls []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

// Stream implements Model.
func (o *OpenAI) Stream(ctx context.Context, req Request, emit func(string) error) (Usage, error) {
	model := req.Model
	if model == "" {
		model = o.Model
	}
	body := chatRequest{Model: model, Stream: true, StreamOptions: map[string]bool{"include_usage": true}, Tools: req.Tools}
	if req.Instructions != "" {
		body.Messages = append(body.Messages, chatMessage{Role: "system", Content: req.Instructions})
	}
	for _, m := range req.Messages {
		cm := chatMessage{Role: m.Role, Content: m.Content, ToolCallID: m.ToolCallID}
		for _, tc := range m.ToolCalls {
			c := chatToolCall{ID: tc.ID, Type: "function"}
			c.Function.Name, c.Function.Arguments = tc.Name, tc.Arguments
			cm.ToolCalls = append(cm.ToolCalls, c)
		}
		body.Messages = append(body.Messages, cm)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return Usage{}, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(o.BaseURL, "/")+"/chat/completions", bytes.NewReader(b))
	if err != nil {
		return Usage{}, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "text/event-stream")
	if o.APIKey.Get() != "" {
		hreq.Header.Set("Authorization", "Bearer "+o.APIKey.Get())
	}
	client := o.Client
	if client == nil {
		client = http.DefaultClient
	}
	res, err := client.Do(hreq)
	if err != nil {
		return Usage{}, fmt.Errorf("llm: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 2048))
		return Usage{}, fmt.Errorf("llm: model server answered %d: %s", res.StatusCode, apiMessage(msg))
	}
	return readChatStream(res.Body, req, emit)
}

// apiMessage extracts {"error":{"message":...}} or returns the body.
func apiMessage(b []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	return strings.TrimSpace(string(b))
}

// readChatStream parses server-sent events of chat completion chunks.
func readChatStream(r io.Reader, req Request, emit func(string) error) (Usage, error) {
	var u Usage
	out := 0
	calls := map[int]*ToolCall{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data:")
		if !ok {
			continue // comments, event names, blank separators
		}
		data = strings.TrimSpace(data)
		if data == "[DONE]" {
			break
		}
		var c chatChunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			return u, fmt.Errorf("llm: bad stream chunk: %w", err)
		}
		if c.Usage != nil {
			u = Usage{InputTokens: c.Usage.PromptTokens, OutputTokens: c.Usage.CompletionTokens}
		}
		for _, ch := range c.Choices {
			for _, tc := range ch.Delta.ToolCalls {
				call := calls[tc.Index]
				if call == nil {
					call = &ToolCall{}
					calls[tc.Index] = call
				}
				if tc.ID != "" {
					call.ID = tc.ID
				}
				if tc.Function.Name != "" {
					call.Name = tc.Function.Name
				}
				call.Arguments += tc.Function.Arguments
			}
			if ch.Delta.Content != "" {
				out++
				if err := emit(ch.Delta.Content); err != nil {
					return u, err
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return u, fmt.Errorf("llm: reading stream: %w", err)
	}
	if u.OutputTokens == 0 {
		u.OutputTokens = out
	}
	idx := make([]int, 0, len(calls))
	for i := range calls {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		if req.OnToolCall != nil {
			req.OnToolCall(*calls[i])
		}
	}
	return u, nil
}
