// Package tenancy carries the tenant a request acts for in its context. It is
// set once per request, after authentication, and read by the data layer,
// which scopes every query to it.
package tenancy

import (
	"context"

	"github.com/google/uuid"
)

type key struct{}

// With returns ctx acting for tenant id.
func With(ctx context.Context, id uuid.UUID) context.Context {
	return context.WithValue(ctx, key{}, id)
}

// ID returns the tenant ctx acts for, if any.
func ID(ctx context.Context) (uuid.UUID, bool) {
	id, ok := ctx.Value(key{}).(uuid.UUID)
	return id, ok && id != uuid.Nil
}
