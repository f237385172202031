package llm

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Rule answers with Reply when every keyword of one of its Match entries
// appears in the user's last message (case-insensitive).
//
// A rule with a Tool calls that tool instead, when the request offers it,
// with the Arguments taken from the user's words; once the result is back,
// the reply is the result's "say" (or "message", "confirmation") field, or
// its text, or After.
type Rule struct {
	Match     []string // each entry: space-separated keywords that must all appear
	Reply     string
	Tool      string
	Arguments func(user string) map[string]any
	After     string
	// Examples are things a caller says that this rule answers: with a
	// recognizer limited to phrases, they are what it listens for. A
	// "{name}" in one stands for each word of Slots[name].
	Examples []string
}

// Slots are the words an example's "{name}" stands for.
var Slots = map[string][]string{
	"day": {"today", "tomorrow", "monday", "tuesday", "wednesday", "thursday", "friday"},
	// Hours a phrases-only recognizer tells apart well ("ten" and "two",
	// "ten" and "noon" it does not).
	"hour": {"ten", "three", "five"},
}

// Scripted is a deterministic model: it answers from a rule set, not from a
// language model. It lets the platform run and be tested with no model at
// all, and tenants can edit its rules for fixed flows (IVR menus, FAQs).
type Scripted struct {
	Rules    []Rule
	Fallback string
	// WordDelay paces the deltas like a model streaming tokens (0: at once).
	WordDelay time.Duration
	calls     atomic.Int64
}

// DefaultScript is the scripted model's rule set when a tenant has none.
var DefaultScript = &Scripted{
	Rules: []Rule{
		{Match: []string{"book meeting", "schedule meeting"}, Reply: "Sure. I booked the meeting for tomorrow at ten.",
			Tool: "book_meeting", Arguments: When, After: "Your meeting is booked.",
			Examples: []string{"please book a meeting for {day} at {hour}", "book a meeting for {day} at {hour}",
				"schedule a meeting for {day} at {hour}", "please book a meeting", "book a meeting"}},
		{Match: []string{"cancel meeting"}, Reply: "Okay. Your meeting is cancelled.",
			Examples: []string{"cancel my meeting", "please cancel my meeting", "cancel the meeting for {day}"}},
		{Match: []string{"weather"}, Reply: "I cannot see the weather. Please check a forecast.",
			Examples: []string{"what is the weather", "what is the weather {day}"}},
		{Match: []string{"transfer", "human", "agent please", "operator"}, Reply: "I cannot transfer you, sorry.",
			Tool: "transfer", After: "Transferring you now.",
			Examples: []string{"transfer me to a human", "i want to talk to a human", "operator"}},
		{Match: []string{"goodbye", "bye"}, Reply: "Goodbye.", Tool: "end_call", After: "Goodbye. Thank you for calling.",
			Examples: []string{"goodbye", "thank you goodbye", "bye"}},
		{Match: []string{"hello", "hi"}, Reply: "Hello. How can I help you today?",
			Examples: []string{"hello", "hi there", "hello can you help me"}},
	},
	Fallback: "Sorry, I did not understand. Could you say that again?",
}

// Phrases are the example utterances of every rule, slots expanded: what
// a recognizer limited to phrases listens for when this model answers.
func (s *Scripted) Phrases() []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range s.Rules {
		for _, e := range r.Examples {
			for _, p := range expand(e) {
				if !seen[p] {
					seen[p] = true
					out = append(out, p)
				}
			}
		}
	}
	return out
}

// expand replaces an example's first "{slot}" with each of its words, and
// so on for the rest.
func expand(example string) []string {
	open := strings.IndexByte(example, '{')
	end := strings.IndexByte(example, '}')
	if open < 0 || end < open {
		return []string{example}
	}
	words, ok := Slots[example[open+1:end]]
	if !ok {
		return []string{example}
	}
	var out []string
	for _, w := range words {
		out = append(out, expand(example[:open]+w+example[end+1:])...)
	}
	return out
}

// Reply returns the scripted answer to a user message.
func (s *Scripted) Reply(user string) string {
	if r := s.match(user, nil); r != nil {
		return r.Reply
	}
	return s.Fallback
}

// match finds the first rule for user; a tool rule counts only when
// offered (nil: tool rules answer with their Reply).
func (s *Scripted) match(user string, offered map[string]bool) *Rule {
	words := strings.Fields(strings.ToLower(user))
	has := func(w string) bool {
		for _, x := range words {
			if strings.Trim(x, ".,!?") == w {
				return true
			}
		}
		return false
	}
	for i := range s.Rules {
		r := &s.Rules[i]
		for _, m := range r.Match {
			all := true
			for _, kw := range strings.Fields(strings.ToLower(m)) {
				all = all && has(kw)
			}
			if all {
				if r.Tool != "" && offered != nil && !offered[r.Tool] {
					r2 := *r
					r2.Tool = ""
					return &r2
				}
				return r
			}
		}
	}
	return nil
}

// offeredTools names the tools in a request.
func offeredTools(req Request) map[string]bool {
	out := map[string]bool{}
	for _, d := range req.Tools {
		var def struct {
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if json.Unmarshal(d, &def) == nil {
			out[def.Function.Name] = true
		}
	}
	return out
}

// afterTools is the reply to the tool results that end msgs.
func (s *Scripted) afterTools(msgs []Message) string {
	var results []Message
	i := len(msgs)
	for i > 0 && msgs[i-1].Role == "tool" {
		i--
	}
	results = msgs[i:]
	names := map[string]string{}
	if i > 0 {
		for _, tc := range msgs[i-1].ToolCalls {
			names[tc.ID] = tc.Name
		}
	}
	var out []string
	for _, m := range results {
		text := strings.TrimSpace(m.Content)
		switch {
		case strings.HasPrefix(text, "error:"), strings.HasPrefix(text, "cancelled:"):
			out = append(out, "Sorry, that did not work.")
			continue
		}
		if say := sayField(text); say != "" {
			out = append(out, say)
			continue
		}
		if text != "" && !strings.HasPrefix(text, "{") && !strings.HasPrefix(text, "[") {
			out = append(out, text)
			continue
		}
		after := "Done."
		for _, r := range s.Rules {
			if r.Tool != "" && r.Tool == names[m.ToolCallID] && r.After != "" {
				after = r.After
			}
		}
		out = append(out, after)
	}
	return strings.Join(out, " ")
}

// sayField is a result's sentence for the caller, if it has one.
func sayField(text string) string {
	var v map[string]any
	if json.Unmarshal([]byte(text), &v) != nil {
		return ""
	}
	for _, k := range []string{"say", "message", "confirmation"} {
		if s, ok := v[k].(string); ok && strings.TrimSpace(s) != "" {
			return strings.TrimSpace(s)
		}
	}
	return ""
}

var (
	dayWords  = []string{"today", "tomorrow", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
	hourWords = map[string]int{"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
		"nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "noon": 12}
	minuteWords = map[string]int{"fifteen": 15, "thirty": 30, "half": 30, "forty-five": 45, "o'clock": 0}
)

// When takes a day and a time from what the user said ("tomorrow at ten
// thirty" gives {"day":"tomorrow","time":"10:30"}); what is not said is
// left out.
func When(user string) map[string]any {
	words := strings.Fields(strings.ToLower(user))
	out := map[string]any{}
	for i, w := range words {
		w = strings.Trim(w, ".,!?")
		if slices.Contains(dayWords, w) {
			out["day"] = w
		}
		if w != "at" || i+1 >= len(words) {
			continue
		}
		next := strings.Trim(words[i+1], ".,!?")
		h, ok := hourWords[next]
		if !ok {
			n, err := strconv.Atoi(next)
			if err != nil || n < 0 || n > 23 {
				continue
			}
			h = n
		}
		m := 0
		if i+2 < len(words) {
			after := strings.Trim(words[i+2], ".,!?")
			if mm, ok := minuteWords[after]; ok {
				m = mm
			} else if after == "pm" && h < 12 {
				h += 12
			}
		}
		out["time"] = fmt.Sprintf("%02d:%02d", h, m)
	}
	return out
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
	var reply string
	switch {
	case len(req.Messages) > 0 && req.Messages[len(req.Messages)-1].Role == "tool":
		reply = s.afterTools(req.Messages)
	default:
		r := s.match(last, offeredTools(req))
		switch {
		case r == nil:
			reply = s.Fallback
		case r.Tool != "" && req.OnToolCall != nil:
			args := map[string]any{}
			if r.Arguments != nil {
				args = r.Arguments(last)
			}
			b, _ := json.Marshal(args)
			s.calls.Add(1)
			req.OnToolCall(ToolCall{ID: fmt.Sprintf("call_s%d", s.calls.Load()), Name: r.Tool, Arguments: string(b)})
			return Usage{InputTokens: in, OutputTokens: CountTokens(string(b))}, nil
		default:
			reply = r.Reply
		}
	}
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
