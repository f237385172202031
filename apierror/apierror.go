// Package apierror builds the API's errors: a Connect code plus a stable,
// machine-readable reason carried as google.rpc.ErrorInfo. The reasons
// themselves are listed once, as avb.v1.ErrorReason in proto/avb/v1/common.proto.
package apierror

import (
	"errors"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/platform/dependency"
	"github.com/agentvoicebox/avb/store"
)

// Domain is the ErrorInfo domain of every error the API returns.
const Domain = "agentvoicebox.dev"

// ReasonString spells a reason the way it travels: the enum value name,
// lower-case, without its ERROR_REASON_ prefix ("token_expired").
func ReasonString(r avbv1.ErrorReason) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "ERROR_REASON_"))
}

// New returns a Connect error with code, a human-readable message and the
// reason as ErrorInfo. metadata adds key/value pairs to the ErrorInfo.
func New(code connect.Code, reason avbv1.ErrorReason, message string, metadata ...string) *connect.Error {
	err := connect.NewError(code, errors.New(message))
	info := &errdetails.ErrorInfo{Reason: ReasonString(reason), Domain: Domain}
	if len(metadata) > 1 {
		info.Metadata = make(map[string]string, len(metadata)/2)
		for i := 0; i+1 < len(metadata); i += 2 {
			info.Metadata[metadata[i]] = metadata[i+1]
		}
	}
	if detail, derr := connect.NewErrorDetail(info); derr == nil {
		err.AddDetail(detail)
	}
	return err
}

// Reason returns the ErrorInfo reason of err, or "" when it carries none.
func Reason(err error) string {
	info := Info(err)
	if info == nil {
		return ""
	}
	return info.GetReason()
}

// Info returns the ErrorInfo detail of err, or nil.
func Info(err error) *errdetails.ErrorInfo {
	var cerr *connect.Error
	if !errors.As(err, &cerr) {
		return nil
	}
	for _, d := range cerr.Details() {
		msg, derr := d.Value()
		if derr != nil {
			continue
		}
		if info, ok := msg.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			return info
		}
	}
	return nil
}

// Internal is the error a client sees for any unexpected failure. The cause
// is logged under the request id, never sent.
func Internal(requestID string) *connect.Error {
	return New(connect.CodeInternal, avbv1.ErrorReason_ERROR_REASON_INTERNAL,
		"internal error; quote request id "+requestID+" when reporting it", "request_id", requestID)
}

// From maps the data layer's errors to API errors. Errors it does not know
// are returned unchanged (the error interceptor turns them into internal).
func From(err error) error {
	var limit *store.LimitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, new(*connect.Error)):
		return err
	case errors.Is(err, store.ErrNotFound):
		return New(connect.CodeNotFound, avbv1.ErrorReason_ERROR_REASON_NOT_FOUND, "not found")
	case errors.Is(err, store.ErrAlreadyExists):
		return New(connect.CodeAlreadyExists, avbv1.ErrorReason_ERROR_REASON_ALREADY_EXISTS, err.Error())
	case errors.As(err, &limit):
		return New(connect.CodeResourceExhausted, avbv1.ErrorReason_ERROR_REASON_TENANT_LIMIT_EXCEEDED,
			limit.Error(), "limit", limit.Limit, "max", strconv.Itoa(limit.Max))
	case errors.Is(err, store.ErrInvalidPageToken):
		return New(connect.CodeInvalidArgument, avbv1.ErrorReason_ERROR_REASON_INVALID_PAGE_TOKEN,
			"page_token is invalid or belongs to another query")
	case errors.Is(err, store.ErrNoTenant):
		return New(connect.CodeInvalidArgument, avbv1.ErrorReason_ERROR_REASON_TENANT_REQUIRED, "no tenant for this request")
	case errors.Is(err, store.ErrWrongTenant):
		return New(connect.CodePermissionDenied, avbv1.ErrorReason_ERROR_REASON_TENANT_MISMATCH, "belongs to another tenant")
	}
	// A dependency that refused, did not answer within its deadline, or is
	// known to be down: the same answer in every case.
	if errors.Is(err, dependency.ErrUnavailable) {
		return Unavailable()
	}
	// A gRPC dependency (SpiceDB, Temporal) that is down or too slow.
	if s, ok := status.FromError(err); ok && (s.Code() == codes.Unavailable || s.Code() == codes.DeadlineExceeded) {
		return Unavailable()
	}
	return err
}

// Unavailable is the error of a request a dependency could not serve in time.
func Unavailable() *connect.Error {
	return New(connect.CodeUnavailable, avbv1.ErrorReason_ERROR_REASON_DEPENDENCY_UNAVAILABLE, "a dependency is unavailable; retry")
}

// Field returns invalid_argument (validation_failed) naming one bad field,
// the way request validation reports its violations.
func Field(field, description string) *connect.Error {
	err := New(connect.CodeInvalidArgument, avbv1.ErrorReason_ERROR_REASON_VALIDATION_FAILED, field+": "+description)
	bad := &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: description}}}
	if d, derr := connect.NewErrorDetail(bad); derr == nil {
		err.AddDetail(d)
	}
	return err
}
