package tools

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const bookMeeting = `{"type":"object","properties":{
  "day":{"type":"string","enum":["today","tomorrow"]},
  "time":{"type":"string","pattern":"^[0-2][0-9]:[0-5][0-9]$"},
  "attendees":{"type":"array","items":{"type":"string"},"maxItems":10}},
  "required":["day","time"],"additionalProperties":false}`

// Arguments that match the schema pass; the others are refused with what
// is wrong, where, for the model to read.
func TestValidateArguments(t *testing.T) {
	s, err := Compile("book_meeting", json.RawMessage(bookMeeting))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(`{"day":"tomorrow","time":"10:00"}`); err != nil {
		t.Fatalf("valid arguments: %v", err)
	}
	for args, want := range map[string]string{
		`{"day":"tomorrow"}`:                           "time",
		`{"day":"yesterday","time":"10:00"}`:           "/day",
		`{"day":"today","time":"ten"}`:                 "/time",
		`{"day":"today","time":"10:00","room":"A"}`:    "room",
		`{"day":"today","time":"10:00","attendees":1}`: "/attendees",
		`{"day":`: "not JSON",
		`[1,2]`:   "object",
		`"` + strings.Repeat("x", MaxArguments) + `"`: "bytes",
	} {
		err := s.Validate(args)
		if !errors.Is(err, ErrInvalidArguments) || !strings.Contains(err.Error(), want) || strings.Count(err.Error(), "\n") > 0 {
			t.Errorf("%.40s: %v, want one line naming %q", args, err, want)
		}
	}
	any, err := Compile("anything", nil)
	if err != nil || any.Validate("") != nil || any.Validate(`{"a":1}`) != nil {
		t.Fatalf("a tool without parameters takes any object: %v", err)
	}
}

// A schema that is not JSON Schema, or that refers to a file or a URL, is
// refused when compiled: a tenant's schema never makes the server read a
// file or call out.
func TestCompileRefuses(t *testing.T) {
	for name, schema := range map[string]string{
		"not json":   `{"type":`,
		"bad type":   `{"type":"objekt"}`,
		"file ref":   `{"$ref":"file:///etc/passwd"}`,
		"remote ref": `{"properties":{"a":{"$ref":"https://example.com/schema.json"}}}`,
		"bad regexp": `{"properties":{"a":{"pattern":"("}}}`,
	} {
		if _, err := Compile("t", json.RawMessage(schema)); err == nil {
			t.Errorf("%s: compiled", name)
		}
	}
	if _, err := Compile("t", json.RawMessage(`{"$defs":{"d":{"type":"string"}},"properties":{"a":{"$ref":"#/$defs/d"}}}`)); err != nil {
		t.Fatalf("a schema referring to itself: %v", err)
	}
}

// Whatever the arguments, Validate answers without panicking, and accepts
// only JSON objects the schema allows.
func FuzzValidate(f *testing.F) {
	s, err := Compile("book_meeting", json.RawMessage(bookMeeting))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(`{"day":"tomorrow","time":"10:00"}`)
	f.Add(`{"day":"today","time":"23:59","attendees":["a"]}`)
	f.Add(`{"day":`)
	f.Fuzz(func(t *testing.T, args string) {
		if s.Validate(args) != nil {
			return
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(args), &v); err != nil || v["day"] == nil || v["time"] == nil {
			t.Fatalf("accepted %q", args)
		}
	})
}
