package middleware

import (
	"context"
	"errors"
	"fmt"

	"buf.build/go/protovalidate"
	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"

	"github.com/agentvoicebox/avb/apierror"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
)

// Validate checks every request message against its protovalidate rules
// (buf.validate options in the contract). A bad request gets invalid_argument
// with reason validation_failed and one field violation per bad field.
func Validate() (connect.Interceptor, error) {
	v, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("create validator: %w", err)
	}
	return validator{v}, nil
}

type validator struct{ v protovalidate.Validator }

func (x validator) check(msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil
	}
	err := x.v.Validate(m)
	if err == nil {
		return nil
	}
	var verr *protovalidate.ValidationError
	if !errors.As(err, &verr) {
		return fmt.Errorf("validate request: %w", err)
	}
	out := apierror.New(connect.CodeInvalidArgument, avbv1.ErrorReason_ERROR_REASON_VALIDATION_FAILED, "request is invalid: "+verr.Error())
	bad := &errdetails.BadRequest{}
	for _, violation := range verr.Violations {
		bad.FieldViolations = append(bad.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field:       protovalidate.FieldPathString(violation.Proto.GetField()),
			Description: violation.Proto.GetMessage(),
			Reason:      violation.Proto.GetRuleId(),
		})
	}
	if d, err := connect.NewErrorDetail(bad); err == nil {
		out.AddDetail(d)
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
