// Package tools runs the functions a model asks for during a call. This
// file checks a call's arguments against the tool's JSON Schema before
// anything runs: invalid arguments go back to the model as an error
// result and are never sent on.
package tools

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// MaxArguments bounds the arguments of one call (bytes of JSON).
const MaxArguments = 64 << 10

// Schema is a tool's compiled parameters schema.
type Schema struct {
	name string
	s    *jsonschema.Schema
}

// refuseLoads loads nothing: a tenant's schema may not $ref a file or a
// URL (that would read the server's files or call out), only itself.
type refuseLoads struct{}

func (refuseLoads) Load(url string) (any, error) {
	return nil, fmt.Errorf("schemas may not refer to %s: only to themselves", url)
}

// Compile compiles a tool's parameters (a JSON Schema object; empty: any
// object). It fails on a schema that is not valid JSON Schema or refers
// outside itself.
func Compile(name string, parameters json.RawMessage) (*Schema, error) {
	if len(bytes.TrimSpace(parameters)) == 0 || string(bytes.TrimSpace(parameters)) == "null" {
		parameters = json.RawMessage(`{"type":"object"}`)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(parameters))
	if err != nil {
		return nil, fmt.Errorf("tool %s: parameters are not JSON: %w", name, err)
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(refuseLoads{})
	loc := "tool:" + name
	if err := c.AddResource(loc, doc); err != nil {
		return nil, fmt.Errorf("tool %s: %w", name, err)
	}
	s, err := c.Compile(loc)
	if err != nil {
		return nil, fmt.Errorf("tool %s: parameters are not a valid JSON Schema: %s", name, firstLine(err.Error()))
	}
	return &Schema{name: name, s: s}, nil
}

// ErrInvalidArguments wraps what is wrong with a call's arguments.
var ErrInvalidArguments = errors.New("invalid arguments")

// Validate checks a call's arguments (JSON text, as the model sent them).
// Its error, meant for the model, says what is wrong in a few lines.
func (s *Schema) Validate(arguments string) error {
	if len(arguments) > MaxArguments {
		return fmt.Errorf("%w for %s: more than %d bytes", ErrInvalidArguments, s.name, MaxArguments)
	}
	if strings.TrimSpace(arguments) == "" {
		arguments = "{}"
	}
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(arguments))
	if err != nil {
		return fmt.Errorf("%w for %s: not JSON", ErrInvalidArguments, s.name)
	}
	if err := s.s.Validate(v); err != nil {
		var ve *jsonschema.ValidationError
		msg := err.Error()
		if errors.As(err, &ve) {
			msg = describe(ve)
		}
		return fmt.Errorf("%w for %s: %s", ErrInvalidArguments, s.name, msg)
	}
	return nil
}

// describe lists the innermost failures of a validation, at most five.
func describe(ve *jsonschema.ValidationError) string {
	var out []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(out) >= 5 {
			return
		}
		if len(e.Causes) == 0 {
			where := "/" + strings.Join(e.InstanceLocation, "/")
			out = append(out, where+": "+firstLine(e.ErrorKind.LocalizedString(english)))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	return strings.Join(out, "; ")
}

var english = message.NewPrinter(language.English)

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
