package store

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/agentvoicebox/avb/platform/redact"
)

// Redacted replaces a secret's value in the audit log.
const Redacted = redact.Redacted

// secretField reports whether a field's values never reach the audit log:
// secrets, passwords, tokens, key hashes and raw keys, by name in either
// snake_case or lowerCamelCase (so "max_tokens" is kept, "access_token"
// and "webhookSecret" are not).
func secretField(name string) bool {
	n := strings.ToLower(strings.ReplaceAll(name, "_", ""))
	for _, s := range []string{"secret", "password", "token", "hash", "apikey", "privatekey", "authorization", "credential", "credentials"} {
		if strings.HasSuffix(n, s) {
			return true
		}
	}
	return false
}

// AuditValues is v as the JSON object an entry stores, secrets redacted.
func AuditValues(v any) json.RawMessage {
	var raw []byte
	switch x := v.(type) {
	case json.RawMessage:
		raw = x
	case []byte:
		raw = x
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return json.RawMessage(`{}`)
		}
		raw = b
	}
	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		return json.RawMessage(`{}`)
	}
	if _, ok := tree.(map[string]any); !ok {
		tree = map[string]any{"value": tree}
	}
	out, err := json.Marshal(redact.Tree(tree, secretField))
	if err != nil {
		return json.RawMessage(`{}`)
	}
	return out
}

// AuditDiff returns the top-level fields of two JSON objects whose values
// differ: their values before and after (a field only one side has
// appears on that side).
func AuditDiff(before, after json.RawMessage) (old, new map[string]json.RawMessage) {
	var b, a map[string]json.RawMessage
	_ = json.Unmarshal(before, &b)
	_ = json.Unmarshal(after, &a)
	old, new = map[string]json.RawMessage{}, map[string]json.RawMessage{}
	for k, v := range b {
		if w, ok := a[k]; !ok || !jsonEqual(v, w) {
			old[k] = v
		}
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !jsonEqual(v, w) {
			new[k] = v
		}
	}
	return old, new
}

func jsonEqual(x, y json.RawMessage) bool {
	if bytes.Equal(x, y) {
		return true
	}
	var a, b any
	if json.Unmarshal(x, &a) != nil || json.Unmarshal(y, &b) != nil {
		return false
	}
	ca, _ := json.Marshal(a)
	cb, _ := json.Marshal(b)
	return bytes.Equal(ca, cb)
}
