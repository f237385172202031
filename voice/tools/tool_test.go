package tools

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// Secret-looking fields are redacted at any depth; other values stay.
func TestRedact(t *testing.T) {
	got := Redact(`{"day":"tomorrow","card_number":"4111111111111111","auth":{"api_key":"sk-1","user":"ada"},"list":[{"password":"p"}]}`)
	for _, leak := range []string{"4111", "sk-1", `"p"`} {
		if strings.Contains(got, leak) {
			t.Fatalf("%s leaks %s", got, leak)
		}
	}
	if !strings.Contains(got, `"day":"tomorrow"`) || !strings.Contains(got, `"user":"ada"`) {
		t.Fatalf("redacted too much: %s", got)
	}
	if long := Redact(strings.Repeat("é", RecordLimit)); len(long) > RecordLimit || !strings.HasSuffix(long, "…[truncated]") {
		t.Fatalf("not truncated: %d bytes", len(long))
	}
}

// Whatever a tool or a model sends, the record is bounded, valid UTF-8
// when the input was, and never shows a value under a secret-looking key.
func FuzzRedact(f *testing.F) {
	for _, s := range []string{`{"token":"abc"}`, `[{"a":{"secret":1}}]`, `"text"`, `not json`, `{"x":"` + strings.Repeat("y", 3000) + `"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := Redact(in)
		if len(out) > RecordLimit {
			t.Fatalf("%d bytes", len(out))
		}
		if utf8.ValidString(in) && !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 from valid input: %q", out)
		}
		var v map[string]any
		if json.Unmarshal([]byte(in), &v) == nil && len(out) < RecordLimit {
			var r map[string]any
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("a JSON object recorded as %q: %v", out, err)
			}
			for k, val := range r {
				if secretKey(k) && val != "[redacted]" {
					t.Fatalf("%s kept %v", k, val)
				}
			}
		}
	})
}
