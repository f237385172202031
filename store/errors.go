package store

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// Errors the repositories return; apierror maps them to API errors.
var (
	// ErrNotFound: no row, or a row of another tenant (indistinguishable by design).
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a unique key is taken.
	ErrAlreadyExists = errors.New("already exists")
	// ErrNoTenant: a tenant-scoped operation ran without a tenant in the context.
	ErrNoTenant = errors.New("no tenant in context")
	// ErrInvalidPageToken: the page token is malformed or from another query.
	ErrInvalidPageToken = errors.New("invalid page token")
	// ErrWrongTenant: a row exists but belongs to another tenant than the caller's.
	ErrWrongTenant = errors.New("belongs to another tenant")
)

// LimitError reports that creating a row would exceed a tenant limit.
type LimitError struct {
	Limit string // "max_users", "max_api_keys", ...
	Max   int
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("tenant limit %s (%d) reached", e.Limit, e.Max)
}

// pgCode returns the SQLSTATE of err, or "".
func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

const (
	codeUniqueViolation = "23505"
	codeRLSViolation    = "42501" // insufficient_privilege, raised by WITH CHECK policies
)
