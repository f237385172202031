package llm

import (
	"context"
	"strings"
	"time"
)

// Rule answers with Reply when every keyword of one of its Match entries
// appears in the user's last message (case-insensitive).
type Rule struct {
	Match []string // each entry: space-separated keywords that must all appear
	Reply string
}

// Scripted is a deterministic model: it answers from a rule set, not from a
// language model. It lets the platform run and be tested with no model at
// all, and tenants can edit its rules for fixed flows (IVR menus, FAQs).
type Scripted struct {
	Rules    []Rule
	Fallback string
	// WordDelay paces the deltas like a model streaming tokens (0: at once).
	WordDelay time.Duration
}

// DefaultScript is the scripted model's rule set when a tenant has none.
var DefaultScript = &Scripted{
	Rules: []Rule{
		{Match: []string{"book meeting", "schedule meeting"}, Reply: "Sure. I booked the meeting for tomorrow at ten."},
		{Match: []string{"cancel meeting"}, Reply: "Okay. Your meeting is cancelled."},
		{Match: []string{"weather"}, Reply: "I cannot see the weather. Please check a forecast."},
		{Match: []string{"hello", "hi"}, Reply: "Hello. How can I help you today?"},
	},
	Fallback: "Sorry, I did not understand. Could you say that again?",
}

// Reply returns the scripted answer to a user message.
func (s *Scripted) Reply(user string) string {
	words := strings.Fields(strings.ToLower(user))
	has := func(w string) bool {
		for _, x := range words {
			if strings.Trim(x, ".,!?") == w {
				return true
			}
		}
		return false
	}
	for _, r := range s.Rules {
		for _, m := range r.Match {
			all := true
			for _, kw := range strings.Fields(strings.ToLower(m)) {
				all = all && has(kw)
			}
			if all {
				return r.Reply
			}
		}
	}
	return s.Fallback
}

// Stream implements Model.
func (s *Scripted) Stream(ctx context.Context, req Request, emit func(string) error) (Usage, error) {
	var last string
	in := CountTokens(req.Instructions)
	for _, m := range req.Messages {
		in += CountTokens(m.Content)
		if m.Role == "user" {
			last = m.Content
		}
	}
	reply := s.Reply(last)
	out := 0
	for i, w := range strings.SplitAfter(reply, " ") {
		if err := ctx.Err(); err != nil {
			return Usage{InputTokens: in, OutputTokens: out}, err
		}
		if i > 0 && s.WordDelay > 0 {
			select {
			case <-ctx.Done():
				return Usage{InputTokens: in, OutputTokens: out}, ctx.Err()
			case <-time.After(s.WordDelay):
			}
		}
		if err := emit(w); err != nil {
			return Usage{InputTokens: in, OutputTokens: out}, err
		}
		out++
	}
	return Usage{InputTokens: in, OutputTokens: out}, nil
}
