package tools

import (
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/agentvoicebox/avb/platform/redact"
)

// Kind says who runs a tool.
type Kind int

// Kinds of tool.
const (
	Client   Kind = iota // the client answers a tool_call event
	Webhook              // avb POSTs the call to the tool's URL
	EndCall              // built in: the call ends after the reply
	Transfer             // built in: a transfer event names the target
)

// String is the kind's label in metrics and records.
func (k Kind) String() string {
	switch k {
	case Webhook:
		return "webhook"
	case EndCall:
		return "end_call"
	case Transfer:
		return "transfer"
	}
	return "client"
}

// DefaultTimeout bounds a call to a tool that names no timeout.
const DefaultTimeout = 10 * time.Second

// Tool is a function the model may call during a call.
type Tool struct {
	Name        string
	Description string
	Parameters  json.RawMessage // JSON Schema (empty: any object)
	Kind        Kind
	URL         string        // Webhook
	Timeout     time.Duration // 0: DefaultTimeout
	Idempotent  bool          // Webhook: a failed call may be retried
	Target      string        // Transfer
	Schema      *Schema       // compiled Parameters
}

// New compiles a tool's parameters; it fails on a schema that does not
// compile (see Compile).
func New(t Tool) (Tool, error) {
	s, err := Compile(t.Name, t.Parameters)
	if err != nil {
		return Tool{}, err
	}
	t.Schema = s
	return t, nil
}

// Deadline is how long one call of t may take.
func (t Tool) Deadline() time.Duration {
	if t.Timeout <= 0 {
		return DefaultTimeout
	}
	return t.Timeout
}

// Definition is t as an OpenAI-style function definition, which is what
// models are given.
func (t Tool) Definition() json.RawMessage {
	params := t.Parameters
	if len(params) == 0 || string(params) == "null" {
		params = json.RawMessage(`{"type":"object","properties":{}}`)
	}
	b, _ := json.Marshal(map[string]any{"type": "function", "function": map[string]any{
		"name": t.Name, "description": t.Description, "parameters": params}})
	return b
}

// Outcomes of a tool call, as recorded and counted.
const (
	OutcomeOK        = "ok"
	OutcomeError     = "error"
	OutcomeTimeout   = "timeout"
	OutcomeInvalid   = "invalid_arguments"
	OutcomeCancelled = "cancelled"
)

// Outcomes lists every outcome (bounded metric labels).
var Outcomes = []string{OutcomeOK, OutcomeError, OutcomeTimeout, OutcomeInvalid, OutcomeCancelled}

// RecordLimit bounds a recorded argument or result (bytes).
const RecordLimit = 2048

// secretKey reports whether an object key names something secret.
func secretKey(k string) bool {
	k = strings.ToLower(k)
	for _, s := range []string{"secret", "password", "passwd", "token", "api_key", "apikey", "authorization",
		"credential", "card", "cvv", "ssn", "pin", "iban"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// Redact prepares a tool's arguments or result for the session record:
// JSON object fields whose names look secret (password, token, card…)
// become "[redacted]", and the text is cut to RecordLimit bytes.
func Redact(text string) string {
	var v any
	if err := json.Unmarshal([]byte(text), &v); err == nil {
		if b, err := json.Marshal(redact.Tree(v, secretKey)); err == nil {
			text = string(b)
		}
	}
	return Truncate(text, RecordLimit)
}

// Truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…[truncated]"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}
