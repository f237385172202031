package store

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
)

// RoleAssignment is a role a user holds in a tenant.
type RoleAssignment struct {
	bun.BaseModel `bun:"table:role_assignments"`

	TenantID  uuid.UUID  `bun:"tenant_id,type:uuid"`
	UserID    uuid.UUID  `bun:"user_id,type:uuid"`
	Role      string     `bun:"role"`
	GrantedBy *uuid.UUID `bun:"granted_by,type:uuid"`
	CreatedAt time.Time  `bun:"created_at,nullzero,default:now()"`
}

// Roles is the role assignment repository, scoped to the tenant in ctx.
type Roles struct{ db *DB }

// Roles returns the role assignment repository.
func (db *DB) Roles() Roles { return Roles{db} }

// Grant records that user holds role; an existing assignment is kept.
func (r Roles) Grant(ctx context.Context, a *RoleAssignment) error {
	return r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		exists, err := tx.NewSelect().Model((*User)(nil)).Where("id = ?", a.UserID).Exists(ctx)
		if err != nil {
			return err
		}
		if !exists {
			return ErrNotFound
		}
		_, err = tx.NewInsert().Model(a).ExcludeColumn("tenant_id", "created_at").
			On("CONFLICT (tenant_id, user_id, role) DO UPDATE SET role = EXCLUDED.role").
			Returning("*").Exec(ctx)
		return err
	})
}

// Revoke removes an assignment; removing a missing one is not an error.
func (r Roles) Revoke(ctx context.Context, userID uuid.UUID, role string) error {
	return r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewDelete().Model((*RoleAssignment)(nil)).Where("user_id = ? AND role = ?", userID, role).Exec(ctx)
		return err
	})
}

// List returns one page of assignments, oldest first, optionally for one user.
func (r Roles) List(ctx context.Context, userID uuid.UUID, size int, token string) ([]RoleAssignment, string, error) {
	var out []RoleAssignment
	var next string
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewSelect().Model(&out)
		if userID != uuid.Nil {
			q = q.Where("user_id = ?", userID)
		}
		var err error
		// Keyed by (created_at, user_id): each grant is its own transaction,
		// so one user's assignments never share a created_at.
		next, err = keysetPageBy(ctx, q, &out, size, token, "user_id", userID.String(),
			func(a RoleAssignment) (time.Time, uuid.UUID) { return a.CreatedAt, a.UserID })
		return err
	})
	return out, next, err
}
