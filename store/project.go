package store

import (
	"context"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
)

// ProjectMember is a user's role on a project.
type ProjectMember struct {
	bun.BaseModel `bun:"table:project_members"`

	ProjectID uuid.UUID  `bun:"project_id,type:uuid"`
	UserID    uuid.UUID  `bun:"user_id,type:uuid"`
	Role      string     `bun:"role"`
	GrantedBy *uuid.UUID `bun:"granted_by,type:uuid"`
}

// ProjectMembers is the project role repository, scoped to the tenant in ctx.
type ProjectMembers struct{ db *DB }

// ProjectMembers returns the project role repository.
func (db *DB) ProjectMembers() ProjectMembers { return ProjectMembers{db} }

// Add records a role; adding a held role changes nothing. The user must be
// of the tenant and the project must exist (ErrNotFound).
func (r ProjectMembers) Add(ctx context.Context, projectID, userID uuid.UUID, role string, grantedBy *uuid.UUID) error {
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		n, err := tx.NewSelect().Table("users").Where("id = ?", userID).Count(ctx)
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		m := &ProjectMember{ProjectID: projectID, UserID: userID, Role: role, GrantedBy: grantedBy}
		_, err = tx.NewInsert().Model(m).On("CONFLICT DO NOTHING").Exec(ctx)
		return err
	})
	return mapWriteErr(err)
}

// Remove deletes a role (ErrNotFound if not held).
func (r ProjectMembers) Remove(ctx context.Context, projectID, userID uuid.UUID, role string) error {
	return r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewDelete().Model((*ProjectMember)(nil)).Where("project_id = ? AND user_id = ? AND role = ?", projectID, userID, role).Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// List returns a project's members, by user then role.
func (r ProjectMembers) List(ctx context.Context, projectID uuid.UUID) ([]ProjectMember, error) {
	var out []ProjectMember
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewSelect().Model(&out).Where("project_id = ?", projectID).Order("user_id", "role").Scan(ctx)
	})
	return out, err
}
