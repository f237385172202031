package middleware

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"buf.build/go/protovalidate"
	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/agentvoicebox/avb/apierror"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
)

// Validate checks every request message against its protovalidate rules
// (buf.validate options in the contract) and the fields its
// (avb.v1.required_fields) options demand. A bad request gets
// invalid_argument with reason validation_failed and one field violation per
// bad field, whatever number of its rules it broke.
func Validate() (connect.Interceptor, error) {
	v, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("create validator: %w", err)
	}
	return validator{v: v, required: &sync.Map{}}, nil
}

type validator struct {
	v protovalidate.Validator
	// required caches each request type's requirements: message full name
	// -> []requirement.
	required *sync.Map
}

// requirement is a message field of a request and the fields of it that
// must be set.
type requirement struct {
	field protoreflect.FieldDescriptor
	set   []protoreflect.FieldDescriptor
}

// requirements reads the (avb.v1.required_fields) options of md's fields.
func (x validator) requirements(md protoreflect.MessageDescriptor) []requirement {
	if r, ok := x.required.Load(md.FullName()); ok {
		return r.([]requirement)
	}
	var out []requirement
	for i := range md.Fields().Len() {
		fd := md.Fields().Get(i)
		names, _ := proto.GetExtension(fd.Options(), avbv1.E_RequiredFields).([]string)
		if len(names) == 0 || fd.Message() == nil {
			continue
		}
		r := requirement{field: fd}
		for _, n := range names {
			// A name that is not a field of the message is a contract
			// mistake that a test over every request type catches.
			if sub := fd.Message().Fields().ByName(protoreflect.Name(n)); sub != nil {
				r.set = append(r.set, sub)
			}
		}
		out = append(out, r)
	}
	x.required.Store(md.FullName(), out)
	return out
}

// missing lists the required fields m leaves unset. A message field that is
// itself absent is left to its own rules (buf.validate required).
func (x validator) missing(m protoreflect.Message) []*errdetails.BadRequest_FieldViolation {
	var out []*errdetails.BadRequest_FieldViolation
	for _, r := range x.requirements(m.Descriptor()) {
		if !m.Has(r.field) {
			continue
		}
		sub := m.Get(r.field).Message()
		for _, f := range r.set {
			if !sub.Has(f) {
				out = append(out, &errdetails.BadRequest_FieldViolation{
					Field: string(r.field.Name()) + "." + string(f.Name()), Description: "is required", Reason: "required"})
			}
		}
	}
	return out
}

func (x validator) check(msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil
	}
	violations := x.missing(m.ProtoReflect())
	if err := x.v.Validate(m); err != nil {
		var verr *protovalidate.ValidationError
		if !errors.As(err, &verr) {
			return fmt.Errorf("validate request: %w", err)
		}
		for _, v := range verr.Violations {
			violations = append(violations, &errdetails.BadRequest_FieldViolation{
				Field:       protovalidate.FieldPathString(v.Proto.GetField()),
				Description: v.Proto.GetMessage(),
				Reason:      v.Proto.GetRuleId(),
			})
		}
	}
	if len(violations) == 0 {
		return nil
	}
	violations = onePerField(violations)
	msgs := make([]string, len(violations))
	for i, v := range violations {
		msgs[i] = v.GetField() + ": " + v.GetDescription()
	}
	out := apierror.New(connect.CodeInvalidArgument, avbv1.ErrorReason_ERROR_REASON_VALIDATION_FAILED,
		"request is invalid: "+strings.Join(msgs, "; "))
	if d, err := connect.NewErrorDetail(&errdetails.BadRequest{FieldViolations: violations}); err == nil {
		out.AddDetail(d)
	}
	return out
}

// onePerField merges the violations of each field into one, in the order
// the fields first appear, joining what each broken rule says.
func onePerField(vs []*errdetails.BadRequest_FieldViolation) []*errdetails.BadRequest_FieldViolation {
	var out []*errdetails.BadRequest_FieldViolation
	at := map[string]*errdetails.BadRequest_FieldViolation{}
	for _, v := range vs {
		if first, ok := at[v.GetField()]; ok {
			first.Description += "; " + v.GetDescription()
			if v.GetReason() != "" && !strings.Contains(first.GetReason(), v.GetReason()) {
				first.Reason = strings.TrimPrefix(first.GetReason()+","+v.GetReason(), ",")
			}
			continue
		}
		at[v.GetField()] = v
		out = append(out, v)
	}
	return out
}

func (x validator) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := x.check(req.Any()); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (x validator) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (x validator) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return next(ctx, &validatingConn{StreamingHandlerConn: conn, x: x})
	}
}

type validatingConn struct {
	connect.StreamingHandlerConn
	x validator
}

func (c *validatingConn) Receive(msg any) error {
	if err := c.StreamingHandlerConn.Receive(msg); err != nil {
		return err
	}
	return c.x.check(msg)
}
