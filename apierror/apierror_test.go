package apierror_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"connectrpc.com/connect"

	"github.com/agentvoicebox/avb/apierror"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
)

func TestReasonStringsAreStableSnakeCase(t *testing.T) {
	t.Parallel()
	tests := map[avbv1.ErrorReason]string{
		avbv1.ErrorReason_ERROR_REASON_TOKEN_EXPIRED:     "token_expired",
		avbv1.ErrorReason_ERROR_REASON_API_KEY_REVOKED:   "api_key_revoked",
		avbv1.ErrorReason_ERROR_REASON_TENANT_SUSPENDED:  "tenant_suspended",
		avbv1.ErrorReason_ERROR_REASON_PERMISSION_DENIED: "permission_denied",
	}
	for r, want := range tests {
		if got := apierror.ReasonString(r); got != want {
			t.Errorf("ReasonString(%v) = %q, want %q", r, got, want)
		}
	}
}

func TestNewCarriesReasonAndMetadata(t *testing.T) {
	t.Parallel()
	err := apierror.New(connect.CodePermissionDenied, avbv1.ErrorReason_ERROR_REASON_TENANT_SUSPENDED, "tenant is suspended", "tenant_id", "t1")
	if err.Code() != connect.CodePermissionDenied {
		t.Fatalf("code %v", err.Code())
	}
	info := apierror.Info(err)
	if info == nil || info.GetReason() != "tenant_suspended" || info.GetDomain() != "agentvoicebox.dev" || info.GetMetadata()["tenant_id"] != "t1" {
		t.Fatalf("ErrorInfo = %v", info)
	}
	if apierror.Reason(connect.NewError(connect.CodeInternal, nil)) != "" {
		t.Fatal("reason invented for a bare error")
	}
}

func TestDependencyErrorsBecomeUnavailable(t *testing.T) {
	t.Parallel()
	err := apierror.From(fmt.Errorf("write relationships: %w", status.Error(codes.Unavailable, "connection refused")))
	if connect.CodeOf(err) != connect.CodeUnavailable || apierror.Reason(err) != "dependency_unavailable" {
		t.Fatalf("got %v (%s)", err, apierror.Reason(err))
	}
	if strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("internals leaked: %v", err)
	}
}
