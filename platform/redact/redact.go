// Package redact hides secret values in decoded JSON before it is kept
// anywhere (the audit log, a session's record of tool calls).
package redact

// Redacted replaces a secret's value.
const Redacted = "[redacted]"

// Tree replaces, in place and at any depth of a decoded JSON value, the
// value of every object field whose name secret reports, and returns v.
func Tree(v any, secret func(name string) bool) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if secret(k) {
				x[k] = Redacted
			} else {
				x[k] = Tree(e, secret)
			}
		}
	case []any:
		for i, e := range x {
			x[i] = Tree(e, secret)
		}
	}
	return v
}
