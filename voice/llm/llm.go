// Package llm generates the agent's replies. Models stream text deltas;
// the call loop turns them into speech sentence by sentence.
package llm

import (
	"context"
	"encoding/json"
	"strings"
	"unicode"
)

// Message is one conversation turn.
type Message struct {
	Role    string // "system", "user", "assistant", "tool"
	Content string
	// ToolCalls are the calls an assistant turn asked for (its Content may
	// be empty); the results follow as "tool" messages naming ToolCallID.
	ToolCalls  []ToolCall
	ToolCallID string
}

// Request is a conversation to continue.
type Request struct {
	Model        string
	Instructions string
	Messages     []Message
	// Tools are function definitions passed through to models that support
	// them (OpenAI "tools" JSON objects); OnToolCall receives the calls.
	Tools      []json.RawMessage
	OnToolCall func(ToolCall)
}

// ToolCall is a function call a model asked for.
type ToolCall struct {
	ID        string
	Name      string
	Arguments string // JSON
}

// Usage counts tokens.
type Usage struct {
	InputTokens  int
	OutputTokens int
}

// Model is a language model provider.
type Model interface {
	// Stream continues the conversation, calling emit with each text delta.
	// It stops with ctx.Err() when ctx is done (barge-in).
	Stream(ctx context.Context, req Request, emit func(delta string) error) (Usage, error)
}

// Sentences splits streamed text into sentences as they complete, so speech
// can start after the first one instead of after the whole reply.
type Sentences struct {
	buf strings.Builder
}

// Add appends a delta and returns the sentences it completed.
func (s *Sentences) Add(delta string) []string {
	s.buf.WriteString(delta)
	text := s.buf.String()
	var out []string
	start := 0
	for i := 0; i < len(text); i++ {
		switch text[i] {
		case '.', '!', '?', '\n':
			// A sentence ends at punctuation followed by a space or a newline.
			if i+1 < len(text) && (text[i+1] == ' ' || text[i+1] == '\n') || text[i] == '\n' {
				if sent := strings.TrimSpace(text[start : i+1]); hasWords(sent) {
					out = append(out, sent)
				}
				start = i + 1
			}
		}
	}
	s.buf.Reset()
	s.buf.WriteString(text[start:])
	return out
}

// Flush returns what is left when the stream ends.
func (s *Sentences) Flush() string {
	rest := strings.TrimSpace(s.buf.String())
	s.buf.Reset()
	if !hasWords(rest) {
		return ""
	}
	return rest
}

func hasWords(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }) >= 0
}

// CountTokens approximates tokens for models that do not report usage: one
// per word or punctuation run, which is close to real tokenizers for English.
func CountTokens(s string) int {
	return len(strings.FieldsFunc(s, func(r rune) bool { return unicode.IsSpace(r) }))
}
