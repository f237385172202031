package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"

	"github.com/agentvoicebox/avb/tenancy"
)

// Resource is a named resource of a tenant (a project, persona, voice config
// or theme): the columns queries use, and the rest of the resource as the
// JSON form of its protobuf message.
type Resource struct {
	ID        uuid.UUID       `bun:"id,type:uuid"`
	TenantID  uuid.UUID       `bun:"tenant_id,type:uuid"`
	ProjectID *uuid.UUID      `bun:"project_id,type:uuid"`
	Name      string          `bun:"name"`
	IsDefault bool            `bun:"is_default"`
	Spec      json.RawMessage `bun:"spec,type:jsonb"`
	RequestID *uuid.UUID      `bun:"request_id,type:uuid"`
	CreatedAt time.Time       `bun:"created_at"`
	UpdatedAt time.Time       `bun:"updated_at"`
}

// ResourceKind describes one table of named resources.
type ResourceKind struct {
	Table string
	// InProject: rows may belong to a project (project_id column).
	InProject bool
	// Defaultable: at most one row of the tenant is the default (is_default column).
	Defaultable bool
	// limit names the tenants column capping the count ("" for none).
	limit string
	// cached: Get reads through the row cache (DB.CacheRows), and every
	// write of the kind invalidates it.
	cached bool
}

// The kinds of named resources.
var (
	Projects     = ResourceKind{Table: "projects", limit: "max_projects", cached: true}
	Personas     = ResourceKind{Table: "personas", InProject: true, cached: true}
	VoiceConfigs = ResourceKind{Table: "voice_configs", InProject: true, cached: true}
	Themes       = ResourceKind{Table: "themes", Defaultable: true}
	PhoneNumbers = ResourceKind{Table: "phone_numbers", InProject: true}
	SipTrunks    = ResourceKind{Table: "sip_trunks"}
)

// noun is what an audit entry calls a row of the kind ("voice_config").
func (k ResourceKind) noun() string { return strings.TrimSuffix(k.Table, "s") }

// auditValues is the resource as its audit entries show it: its spec's
// fields with its name, project and default flag.
func (res *Resource) auditValues() json.RawMessage {
	v := map[string]any{}
	_ = json.Unmarshal(res.Spec, &v)
	v["name"] = res.Name
	if res.ProjectID != nil {
		v["project_id"] = res.ProjectID.String()
	}
	if res.IsDefault {
		v["is_default"] = true
	}
	b, _ := json.Marshal(v)
	return b
}

// Resources is the repository of one kind, scoped to the tenant in ctx.
type Resources struct {
	db   *DB
	kind ResourceKind
}

// Resources returns the repository of kind k.
func (db *DB) Resources(k ResourceKind) Resources { return Resources{db, k} }

// columns are the select list, filling absent columns with their zero value.
func (r Resources) columns() string {
	cols := "id, tenant_id, name, spec, request_id, created_at, updated_at"
	if r.kind.InProject {
		cols += ", project_id"
	} else {
		cols += ", NULL::uuid AS project_id"
	}
	if r.kind.Defaultable {
		cols += ", is_default"
	} else {
		cols += ", false AS is_default"
	}
	return cols
}

func (r Resources) selectQ(tx bun.Tx, dst any) *bun.SelectQuery {
	return tx.NewSelect().Model(dst).ModelTableExpr(r.kind.Table).ColumnExpr(r.columns())
}

// Create stores res. With a request id already used for this kind, it
// returns the row that request created instead (created is false).
func (r Resources) Create(ctx context.Context, res *Resource) (created bool, err error) {
	err = r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		tenantID, _ := tenancy.ID(ctx)
		if r.kind.limit != "" {
			// The tenant row lock also serializes concurrent retries.
			if err := r.checkLimit(ctx, tx, tenantID); err != nil {
				return err
			}
		} else if res.RequestID != nil {
			if err := lockRequest(ctx, tx, *res.RequestID); err != nil {
				return err
			}
		}
		if res.RequestID != nil {
			var prior []Resource
			if err := r.selectQ(tx, &prior).Where("request_id = ?", *res.RequestID).Scan(ctx); err != nil {
				return err
			}
			if len(prior) == 1 {
				*res = prior[0]
				return nil
			}
		}
		if r.kind.Defaultable && res.IsDefault {
			if err := r.clearDefault(ctx, tx, uuid.Nil); err != nil {
				return err
			}
		}
		res.TenantID = tenantID
		cols := []string{"tenant_id", "name", "spec", "request_id"}
		vals := []any{tenantID, res.Name, string(orEmpty(res.Spec)), res.RequestID}
		if r.kind.InProject {
			cols, vals = append(cols, "project_id"), append(vals, res.ProjectID)
		}
		if r.kind.Defaultable {
			cols, vals = append(cols, "is_default"), append(vals, res.IsDefault)
		}
		q := fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s) RETURNING id, created_at, updated_at",
			r.kind.Table, strings.Join(cols, ", "), strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", "))
		if err := tx.NewRaw(q, vals...).Scan(ctx, &res.ID, &res.CreatedAt, &res.UpdatedAt); err != nil {
			return err
		}
		created = true
		DescribeAudit(ctx, res.ID.String(), "created "+r.kind.noun()+" "+strconv.Quote(res.Name), nil, res.auditValues())
		return nil
	})
	return created, mapWriteErr(err)
}

func (r Resources) checkLimit(ctx context.Context, tx bun.Tx, tenantID uuid.UUID) error {
	limits, err := lockForLimit(ctx, tx, tenantID)
	if err != nil {
		return err
	}
	n, err := tx.NewSelect().TableExpr(r.kind.Table).Count(ctx)
	if err != nil {
		return err
	}
	if r.kind.limit == "max_projects" && int(n) >= limits.MaxProjects {
		return &LimitError{Limit: r.kind.limit, Max: limits.MaxProjects}
	}
	return nil
}

func (r Resources) clearDefault(ctx context.Context, tx bun.Tx, except uuid.UUID) error {
	_, err := tx.NewUpdate().TableExpr(r.kind.Table).Set("is_default = false").
		Where("is_default").Where("id <> ?", except).Exec(ctx)
	return err
}

func orEmpty(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("{}")
	}
	return b
}

// mapWriteErr turns a taken unique name into ErrAlreadyExists and a missing
// project into ErrNotFound.
func mapWriteErr(err error) error {
	switch pgCode(err) {
	case codeUniqueViolation:
		return ErrAlreadyExists
	case "23503": // foreign_key_violation: the project does not exist
		return fmt.Errorf("project: %w", ErrNotFound)
	}
	return err
}

// Get returns one row of the tenant (through the row cache for cached kinds).
func (r Resources) Get(ctx context.Context, id uuid.UUID) (*Resource, error) {
	if !r.kind.cached || r.db.rows == nil {
		return r.get(ctx, id)
	}
	b, err := r.db.rows.Fetch(ctx, r.kind.Table, id.String(), func(ctx context.Context) ([]byte, error) {
		row, err := r.get(ctx, id)
		if err != nil {
			return nil, err
		}
		return json.Marshal(row)
	})
	if err != nil {
		return nil, err
	}
	row := new(Resource)
	if err := json.Unmarshal(b, row); err != nil {
		return nil, fmt.Errorf("cached %s row: %w", r.kind.Table, err)
	}
	return row, nil
}

// forget drops rows of the kind from the row cache, after their change
// committed.
func (r Resources) forget(ctx context.Context, kind ResourceKind, ids ...uuid.UUID) {
	if !kind.cached || r.db.rows == nil || len(ids) == 0 {
		return
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = id.String()
	}
	_ = r.db.rows.Delete(ctx, kind.Table, keys...) // it retries on its own
}

func (r Resources) get(ctx context.Context, id uuid.UUID) (*Resource, error) {
	var out []Resource
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return r.selectQ(tx, &out).Where("id = ?", id).Scan(ctx)
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, ErrNotFound
	}
	return &out[0], nil
}

// Update reads the row under a lock, lets change edit it, and writes the
// name, spec and default flag back.
func (r Resources) Update(ctx context.Context, id uuid.UUID, change func(*Resource) error) (*Resource, error) {
	var res *Resource
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		var rows []Resource
		if err := r.selectQ(tx, &rows).Where("id = ?", id).For("UPDATE").Scan(ctx); err != nil {
			return err
		}
		if len(rows) == 0 {
			return ErrNotFound
		}
		res = &rows[0]
		before := res.auditValues()
		if err := change(res); err != nil {
			return err
		}
		old, new := AuditDiff(before, res.auditValues())
		DescribeAudit(ctx, id.String(), "updated "+r.kind.noun()+" "+strconv.Quote(res.Name), old, new)
		q := tx.NewUpdate().TableExpr(r.kind.Table).Set("name = ?", res.Name).Set("spec = ?", string(orEmpty(res.Spec))).
			Set("updated_at = clock_timestamp()").Where("id = ?", id)
		if r.kind.Defaultable {
			if res.IsDefault {
				if err := r.clearDefault(ctx, tx, id); err != nil {
					return err
				}
			}
			q = q.Set("is_default = ?", res.IsDefault)
		}
		return q.Returning("updated_at").Scan(ctx, &res.UpdatedAt)
	})
	if err != nil {
		return nil, mapWriteErr(err)
	}
	r.forget(ctx, r.kind, id)
	return res, nil
}

// Delete removes one row of the tenant.
// Deleting a project deletes its personas and voice configs (the rows the
// cascade would remove, named so the cache forgets them too).
func (r Resources) Delete(ctx context.Context, id uuid.UUID) error {
	children := map[ResourceKind][]uuid.UUID{}
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		if r.kind == Projects {
			for _, k := range []ResourceKind{Personas, VoiceConfigs} {
				var ids []uuid.UUID
				if err := tx.NewDelete().TableExpr(k.Table).Where("project_id = ?", id).Returning("id").Scan(ctx, &ids); err != nil {
					return err
				}
				children[k] = ids
			}
		}
		var gone []Resource
		if err := tx.NewDelete().TableExpr(r.kind.Table).Where("id = ?", id).Returning(r.columns()).Scan(ctx, &gone); err != nil {
			return err
		}
		if len(gone) == 0 {
			return ErrNotFound
		}
		DescribeAudit(ctx, id.String(), "deleted "+r.kind.noun()+" "+strconv.Quote(gone[0].Name), gone[0].auditValues(), nil)
		return nil
	})
	if err != nil {
		return err
	}
	r.forget(ctx, r.kind, id)
	for k, ids := range children {
		r.forget(ctx, k, ids...)
	}
	return nil
}

// Order is a list order of named resources.
type Order int

// The orders a list can take.
const (
	NewestFirst Order = iota
	OldestFirst
	NameAsc
	NameDesc
)

// ResourceQuery filters and pages a list.
type ResourceQuery struct {
	ProjectID    *uuid.UUID
	NameContains string
	Order        Order
	Size         int
	Token        string
}

// List returns one page and the token of the next ("" at the end).
func (r Resources) List(ctx context.Context, q ResourceQuery) ([]Resource, string, error) {
	var out []Resource
	var next string
	project := ""
	if q.ProjectID != nil {
		project = q.ProjectID.String()
	}
	qh := queryHash(r.kind.Table, project, strings.ToLower(q.NameContains), fmt.Sprint(q.Order))
	cursor, err := decodePageToken(q.Token, qh)
	if err != nil {
		return nil, "", err
	}
	key, op, dir := "created_at", ">", "ASC"
	switch q.Order {
	case NewestFirst:
		op, dir = "<", "DESC"
	case NameAsc:
		key = "lower(name)"
	case NameDesc:
		key, op, dir = "lower(name)", "<", "DESC"
	}
	err = r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		sel := r.selectQ(tx, &out)
		if q.ProjectID != nil {
			sel = sel.Where("project_id = ?", *q.ProjectID)
		}
		if q.NameContains != "" {
			sel = sel.Where("strpos(lower(name), ?) > 0", strings.ToLower(q.NameContains))
		}
		if cursor != nil {
			id, err := uuid.Parse(cursor.GetAfterId())
			if err != nil {
				return ErrInvalidPageToken
			}
			if key == "created_at" {
				t, err := time.Parse(time.RFC3339Nano, cursor.GetAfterKey())
				if err != nil {
					return ErrInvalidPageToken
				}
				sel = sel.Where("(created_at, id) "+op+" (?, ?)", t, id)
			} else {
				sel = sel.Where("(lower(name), id) "+op+" (lower(?), ?)", cursor.GetAfterKey(), id)
			}
		}
		if err := sel.OrderExpr(key + " " + dir + ", id " + dir).Limit(int64(q.Size + 1)).Scan(ctx); err != nil {
			return err
		}
		if len(out) > q.Size {
			out = out[:q.Size]
			last := out[len(out)-1]
			k := last.CreatedAt.Format(time.RFC3339Nano)
			if key != "created_at" {
				k = last.Name
			}
			next = encodePageToken(k, last.ID.String(), qh)
		}
		return nil
	})
	return out, next, err
}

// LiveSessions counts a project's sessions that are created or active.
func (r Resources) LiveSessions(ctx context.Context, projectID uuid.UUID) (int, error) {
	var n int64
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		var err error
		n, err = tx.NewSelect().Table("sessions").Where("project_id = ?", projectID).
			Where("status IN ('created', 'active')").Count(ctx)
		return err
	})
	return int(n), err
}

// PhoneRoute is where a dialed number leads: its row, found before the
// tenant is known.
type PhoneRoute struct {
	ID        uuid.UUID
	TenantID  uuid.UUID
	ProjectID *uuid.UUID
	Spec      json.RawMessage
}

// PhoneNumberRoute finds the number (E.164) in any tenant, through the
// one narrow SECURITY DEFINER function that may look past row-level
// security for it.
func (db *DB) PhoneNumberRoute(ctx context.Context, number string) (*PhoneRoute, error) {
	var r PhoneRoute
	err := db.do(ctx, func(ctx context.Context) error {
		return db.Pool.QueryRow(ctx, "SELECT id, tenant_id, project_id, spec FROM phone_number_route($1)", number).
			Scan(&r.ID, &r.TenantID, &r.ProjectID, &r.Spec)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}
