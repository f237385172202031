// Package apierror builds the API's errors: a Connect code plus a stable,
// machine-readable reason carried as google.rpc.ErrorInfo. The reasons
// themselves are listed once, as avb.v1.ErrorReason in proto/avb/v1/common.proto.
package apierror

import (
	"errors"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
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
