// Package authz decides what a caller may do. Every RPC declares its policy in
// the contract; the interceptor here enforces it with a Decider. Denied calls
// get permission_denied/permission_denied; a decider that cannot decide fails
// closed.
package authz

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	"github.com/agentvoicebox/avb/apierror"
	"github.com/agentvoicebox/avb/authn"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/policy"
)

// Decider answers whether p holds rule's permission (on the resource named by
// resourceID, or on p's tenant when the rule names none).
type Decider interface {
	Allowed(ctx context.Context, p *authn.Principal, rule policy.Rule, resourceID string) (bool, error)
}

// Tenant roles. Each permission lists the roles that grant it.
const (
	RoleAdmin     = "admin"
	RoleDeveloper = "developer"
	RoleOperator  = "operator"
	RoleViewer    = "viewer"
	RoleBilling   = "billing"
)

// scopeRoles maps API key scopes to the tenant role a key acts with.
var scopeRoles = map[string]string{"admin": RoleAdmin, "realtime": RoleOperator, "billing": RoleBilling}

// Interceptor enforces each RPC's policy with d. It runs after authn.
func Interceptor(d Decider) connect.Interceptor { return interceptor{d} }

type interceptor struct{ d Decider }

// ErrDenied is the error of a denied call.
var ErrDenied = errors.New("permission denied")

func (i interceptor) check(ctx context.Context, procedure string, msg any) error {
	rule := policy.For(procedure)
	switch rule.Kind {
	case policy.Public, policy.Authenticated:
		return nil
	case policy.Missing:
		return deny()
	}
	p := authn.PrincipalFrom(ctx)
	if p == nil {
		return deny()
	}
	ok, err := i.d.Allowed(ctx, p, rule, resourceID(msg, rule.IDField))
	if err != nil {
		return apierror.New(connect.CodeUnavailable, avbv1.ErrorReason_ERROR_REASON_DEPENDENCY_UNAVAILABLE,
			"authorization is unavailable; retry")
	}
	if !ok {
		return deny()
	}
	return nil
}

func deny() error {
	return apierror.New(connect.CodePermissionDenied, avbv1.ErrorReason_ERROR_REASON_PERMISSION_DENIED, ErrDenied.Error())
}

func (i interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := i.check(ctx, req.Spec().Procedure, req.Any()); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (i interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		// Streams name their resource in the first message; the tenant-level
		// check happens here, resource checks in the handler after it.
		if err := i.check(ctx, conn.Spec().Procedure, nil); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}
