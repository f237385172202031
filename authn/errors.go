package authn

import (
	"errors"

	"connectrpc.com/connect"

	"github.com/agentvoicebox/avb/apierror"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
)

// apiErrors maps authentication outcomes to API errors.
var apiErrors = []struct {
	err    error
	code   connect.Code
	reason avbv1.ErrorReason
}{
	{ErrUnauthenticated, connect.CodeUnauthenticated, avbv1.ErrorReason_ERROR_REASON_UNAUTHENTICATED},
	{ErrTokenExpired, connect.CodeUnauthenticated, avbv1.ErrorReason_ERROR_REASON_TOKEN_EXPIRED},
	{ErrInvalidToken, connect.CodeUnauthenticated, avbv1.ErrorReason_ERROR_REASON_INVALID_TOKEN},
	{ErrInvalidAPIKey, connect.CodeUnauthenticated, avbv1.ErrorReason_ERROR_REASON_INVALID_API_KEY},
	{ErrAPIKeyExpired, connect.CodeUnauthenticated, avbv1.ErrorReason_ERROR_REASON_API_KEY_EXPIRED},
	{ErrAPIKeyRevoked, connect.CodeUnauthenticated, avbv1.ErrorReason_ERROR_REASON_API_KEY_REVOKED},
	{ErrUserInactive, connect.CodeUnauthenticated, avbv1.ErrorReason_ERROR_REASON_USER_INACTIVE},
	{ErrLoggedOut, connect.CodeUnauthenticated, avbv1.ErrorReason_ERROR_REASON_SESSION_LOGGED_OUT},
	{ErrIssuerUnavailable, connect.CodeUnavailable, avbv1.ErrorReason_ERROR_REASON_DEPENDENCY_UNAVAILABLE},
	{ErrTenantRequired, connect.CodeInvalidArgument, avbv1.ErrorReason_ERROR_REASON_TENANT_REQUIRED},
	{ErrTenantNotFound, connect.CodeNotFound, avbv1.ErrorReason_ERROR_REASON_TENANT_NOT_FOUND},
	{ErrTenantSuspended, connect.CodePermissionDenied, avbv1.ErrorReason_ERROR_REASON_TENANT_SUSPENDED},
	{ErrTenantPending, connect.CodePermissionDenied, avbv1.ErrorReason_ERROR_REASON_TENANT_PENDING},
	{ErrTenantMismatch, connect.CodePermissionDenied, avbv1.ErrorReason_ERROR_REASON_TENANT_MISMATCH},
	{ErrNoPolicy, connect.CodePermissionDenied, avbv1.ErrorReason_ERROR_REASON_PERMISSION_DENIED},
	{ErrClientTokenScope, connect.CodePermissionDenied, avbv1.ErrorReason_ERROR_REASON_PERMISSION_DENIED},
	{ErrInvalidClientToken, connect.CodeUnauthenticated, avbv1.ErrorReason_ERROR_REASON_INVALID_TOKEN},
}

// apiError turns an authentication error into the API error the client sees;
// the sentinel's message is sent, never the wrapped cause.
func apiError(err error) error {
	for _, m := range apiErrors {
		if errors.Is(err, m.err) {
			return apierror.New(m.code, m.reason, m.err.Error())
		}
	}
	return err
}
