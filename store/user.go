package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/agentvoicebox/avb/tenancy"
)

// User is a person of a tenant, mirrored from the identity provider.
type User struct {
	bun.BaseModel `bun:"table:users"`

	ID        uuid.UUID `bun:"id,pk,type:uuid,default:gen_random_uuid()"`
	TenantID  uuid.UUID `bun:"tenant_id,type:uuid"`
	Subject   string    `bun:"subject"`
	Email     string    `bun:"email"`
	FirstName string    `bun:"first_name"`
	LastName  string    `bun:"last_name"`
	IsActive  bool      `bun:"is_active"`
	Roles     []string  `bun:"roles,array"`
	// IdPRoles are the tenant roles from the identity provider that have
	// been applied (sorted); see SetIdPRoles.
	IdPRoles    []string        `bun:"idp_roles,array"`
	Preferences json.RawMessage `bun:"preferences,type:jsonb"`
	CreatedAt   time.Time       `bun:"created_at,nullzero,default:now()"`
	UpdatedAt   time.Time       `bun:"updated_at,nullzero,default:now()"`
	LastLoginAt time.Time       `bun:"last_login_at,nullzero,default:now()"`
	// Inserted is true when Upsert created the row.
	Inserted bool `bun:"inserted,scanonly"`
}

// Users is the user repository; every method is scoped to the tenant in ctx.
type Users struct{ db *DB }

// Users returns the user repository.
func (db *DB) Users() Users { return Users{db} }

// Upsert records the user from a verified token: created on first sight
// (counted against max_users), its profile and roles refreshed afterwards.
// Concurrent first requests of one user are safe. A subject that belongs to
// another tenant yields ErrWrongTenant.
func (r Users) Upsert(ctx context.Context, u *User) (*User, error) {
	out := new(User)
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		tenantID, _ := tenancy.ID(ctx)
		exists, err := tx.NewSelect().Model((*User)(nil)).Where("subject = ?", u.Subject).Exists(ctx)
		if err != nil {
			return err
		}
		if !exists {
			limits, err := lockForLimit(ctx, tx, tenantID)
			if err != nil {
				return err
			}
			n, err := tx.NewSelect().Model((*User)(nil)).Where("is_active").Count(ctx)
			if err != nil {
				return err
			}
			if int(n) >= limits.MaxUsers {
				return &LimitError{Limit: "max_users", Max: limits.MaxUsers}
			}
		}
		row := *u
		row.TenantID, row.IsActive = tenantID, true
		if row.Roles == nil {
			row.Roles = []string{}
		}

		if len(row.Preferences) == 0 {
			row.Preferences = json.RawMessage(`{}`)
		}
		return tx.NewInsert().Model(&row).
			ExcludeColumn("id", "created_at", "updated_at", "last_login_at", "idp_roles").
			On("CONFLICT (subject) DO UPDATE").
			Set("email = EXCLUDED.email, first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name").
			Set("roles = EXCLUDED.roles, last_login_at = now(), updated_at = now()").
			Returning("*, (xmax = 0) AS inserted").Scan(ctx, out)
	})
	if pgCode(err) == codeRLSViolation {
		return nil, ErrWrongTenant
	}
	return out, err
}

// SetIdPRoles records that the identity provider's roles of a user have been
// applied, after the grants and revokes that apply them succeeded.
func (r Users) SetIdPRoles(ctx context.Context, id uuid.UUID, roles []string) error {
	if roles == nil {
		roles = []string{}
	}
	_, err := r.update(ctx, id, "idp_roles = ?", pgdialect.Array(roles))
	return err
}

// Get returns a user of the tenant.
func (r Users) Get(ctx context.Context, id uuid.UUID) (*User, error) {
	return r.one(ctx, "id = ?", id)
}

// GetBySubject returns the tenant's user with that token subject.
func (r Users) GetBySubject(ctx context.Context, subject string) (*User, error) {
	return r.one(ctx, "subject = ?", subject)
}

func (r Users) one(ctx context.Context, where string, arg any) (*User, error) {
	u := new(User)
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewSelect().Model(u).Where(where, arg).Scan(ctx)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return u, err
}

// SetPreferences replaces a user's preferences.
func (r Users) SetPreferences(ctx context.Context, id uuid.UUID, prefs json.RawMessage) (*User, error) {
	return r.update(ctx, id, "preferences = ?", string(prefs))
}

// Deactivate marks a user inactive; their tokens are refused from then on.
func (r Users) Deactivate(ctx context.Context, id uuid.UUID) (*User, error) {
	return r.update(ctx, id, "is_active = ?", false)
}

func (r Users) update(ctx context.Context, id uuid.UUID, set string, arg any) (*User, error) {
	u := new(User)
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewUpdate().Model(u).Set(set, arg).Set("updated_at = now()").
			Where("id = ?", id).Returning("*").Scan(ctx)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return u, err
}

// List returns one page of the tenant's users, oldest first.
func (r Users) List(ctx context.Context, activeOnly bool, size int, token string) ([]User, string, error) {
	var out []User
	var next string
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewSelect().Model(&out)
		if activeOnly {
			q = q.Where("is_active")
		}
		var err error
		next, err = keysetPage(ctx, q, &out, size, token, false, activeOnly,
			func(u User) (time.Time, uuid.UUID) { return u.CreatedAt, u.ID })
		return err
	})
	return out, next, err
}

// keysetPage runs q ordered by (created_at, id), after the token's cursor,
// and returns the next token. filter distinguishes queries for the token.
func keysetPage[T any](ctx context.Context, q *bun.SelectQuery, out *[]T, size int, token string, desc bool, filter any, key func(T) (time.Time, uuid.UUID)) (string, error) {
	return keyset(ctx, q, out, size, token, desc, "id", fmtAny(filter), key)
}

// keysetPageBy is keysetPage, ascending, with another tie-breaking column.
func keysetPageBy[T any](ctx context.Context, q *bun.SelectQuery, out *[]T, size int, token string, idColumn, filter string, key func(T) (time.Time, uuid.UUID)) (string, error) {
	return keyset(ctx, q, out, size, token, false, idColumn, filter, key)
}

func keyset[T any](ctx context.Context, q *bun.SelectQuery, out *[]T, size int, token string, desc bool, idColumn, filter string, key func(T) (time.Time, uuid.UUID)) (string, error) {
	qh := queryHash(q.GetTableName(), filter, fmtAny(desc))
	cursor, err := decodePageToken(token, qh)
	if err != nil {
		return "", err
	}
	op, dir := ">", "ASC"
	if desc {
		op, dir = "<", "DESC"
	}
	if cursor != nil {
		at, err1 := time.Parse(time.RFC3339Nano, cursor.GetAfterKey())
		id, err2 := uuid.Parse(cursor.GetAfterId())
		if err1 != nil || err2 != nil {
			return "", ErrInvalidPageToken
		}
		q = q.Where("(created_at, ?) "+op+" (?, ?)", bun.Ident(idColumn), at, id)
	}
	if err := q.OrderExpr("created_at "+dir+", ? "+dir, bun.Ident(idColumn)).Limit(int64(size + 1)).Scan(ctx); err != nil {
		return "", err
	}
	if len(*out) <= size {
		return "", nil
	}
	*out = (*out)[:size]
	at, id := key((*out)[size-1])
	return encodePageToken(at.Format(time.RFC3339Nano), id.String(), qh), nil
}
