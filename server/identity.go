package server

import (
	"context"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/agentvoicebox/avb/apierror"
	"github.com/agentvoicebox/avb/authn"
	"github.com/agentvoicebox/avb/authz"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/platform/invalidation"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

// Identity are the dependencies of the tenant, admin, user and API key services.
type Identity struct {
	DB      *store.DB
	Tenants *authn.Tenants
	Keys    *authn.APIKeys
	Bus     *invalidation.Bus
	Grants  *authz.Grants
}

func invalidArgument(msg string) error {
	return apierror.New(connect.CodeInvalidArgument, avbv1.ErrorReason_ERROR_REASON_VALIDATION_FAILED, msg)
}

// parseID reads an id the validator already checked to be a UUID.
func parseID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, invalidArgument("not a UUID: " + s)
	}
	return id, nil
}

// callerTenant returns the tenant the request acts for.
func callerTenant(ctx context.Context) (uuid.UUID, error) {
	id, ok := tenancy.ID(ctx)
	if !ok {
		return uuid.Nil, apierror.From(store.ErrNoTenant)
	}
	return id, nil
}

func apierrorNotFound(msg string) error {
	return apierror.New(connect.CodeNotFound, avbv1.ErrorReason_ERROR_REASON_NOT_FOUND, msg)
}
