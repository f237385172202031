package server

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/agentvoicebox/avb/apierror"
	"github.com/agentvoicebox/avb/authn"
	"github.com/agentvoicebox/avb/authz"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/platform/events"
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
	// Events, when it has a Redis client, tells the tenant's subscribers
	// about changed resources ("project.created").
	Events events.Hub
	Log    *slog.Logger
	// BillingChanged, when set, brings the tenant's billing account up to
	// date in the background (created, deleted; never waited on).
	BillingChanged func(ctx context.Context, tenantID uuid.UUID)
	// Sealer encrypts tenant secrets (nil: no secret store, and tenant
	// secrets are refused).
	Sealer Sealer
	// Tools checks personas' webhook tools (https in prod, public or
	// allowed addresses).
	Tools Tools
	// Decider answers which tenant permissions a caller holds, for the
	// user interface to offer only what it may do (nil: none are listed).
	Decider authz.Decider
}

// publish tells the tenant's subscribers that a resource changed. It is
// best-effort: the change is stored, and a subscriber that misses it sees
// it on the next read.
func (d Identity) publish(ctx context.Context, typ string, data map[string]any) {
	tenantID, ok := tenancy.ID(ctx)
	if d.Events.Redis == nil || !ok {
		return
	}
	if err := d.Events.Publish(ctx, events.Event{Type: typ, TenantID: tenantID.String(), Time: time.Now(), Data: data}); err != nil && d.Log != nil {
		d.Log.WarnContext(ctx, "publish event", "type", typ, "err", err)
	}
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
