package server

import (
	"context"
	"slices"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentvoicebox/avb/apierror"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/store"
)

// The fields of a named resource message that live in their own columns or
// that the server owns; everything else is the resource's JSON spec.
var columnFields = []protoreflect.Name{"id", "tenant_id", "project_id", "name", "is_default", "create_time", "update_time"}

// immutableFields cannot be named in an update mask.
var immutableFields = []protoreflect.Name{"id", "tenant_id", "project_id", "create_time", "update_time"}

// named serves one kind of named resource (projects, personas, voice
// configs, themes): the message M is stored as a store.Resource row, and
// each row is a SpiceDB object of type objType linked to its tenant (and
// project).
type named[M proto.Message] struct {
	Identity
	kind    store.ResourceKind
	objType string
	// field is the request field holding M, for error paths ("persona").
	field string
	new   func() M
	// check, when set, refuses a resource whose fields do not go together
	// (with field violations), on create and on update.
	check func(M) error
}

func fieldOf(m protoreflect.Message, name protoreflect.Name) protoreflect.FieldDescriptor {
	return m.Descriptor().Fields().ByName(name)
}

// toRow splits m into its columns and its spec.
func (n named[M]) toRow(m M) (*store.Resource, error) {
	r := m.ProtoReflect()
	row := &store.Resource{Name: r.Get(fieldOf(r, "name")).String()}
	if fd := fieldOf(r, "project_id"); fd != nil && r.Get(fd).String() != "" {
		id, err := uuid.Parse(r.Get(fd).String())
		if err != nil {
			return nil, apierror.Field(n.field+".project_id", "not a UUID")
		}
		row.ProjectID = &id
	}
	if fd := fieldOf(r, "is_default"); fd != nil {
		row.IsDefault = r.Get(fd).Bool()
	}
	spec := proto.Clone(m).ProtoReflect()
	for _, name := range columnFields {
		if fd := fieldOf(spec, name); fd != nil {
			spec.Clear(fd)
		}
	}
	b, err := protojson.Marshal(spec.Interface())
	if err != nil {
		return nil, err
	}
	row.Spec = b
	return row, nil
}

// fromRow builds the message of a row.
func (n named[M]) fromRow(row *store.Resource) M {
	m := n.new()
	_ = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(orEmptyJSON(row.Spec), m)
	r := m.ProtoReflect()
	set := func(name protoreflect.Name, v protoreflect.Value) {
		if fd := fieldOf(r, name); fd != nil {
			r.Set(fd, v)
		}
	}
	set("id", protoreflect.ValueOfString(row.ID.String()))
	set("tenant_id", protoreflect.ValueOfString(row.TenantID.String()))
	set("name", protoreflect.ValueOfString(row.Name))
	if row.ProjectID != nil {
		set("project_id", protoreflect.ValueOfString(row.ProjectID.String()))
	}
	if row.IsDefault {
		set("is_default", protoreflect.ValueOfBool(true))
	}
	set("create_time", protoreflect.ValueOfMessage(timestamppb.New(row.CreatedAt).ProtoReflect()))
	set("update_time", protoreflect.ValueOfMessage(timestamppb.New(row.UpdatedAt).ProtoReflect()))
	return m
}

func orEmptyJSON(b []byte) []byte {
	if len(b) == 0 {
		return []byte("{}")
	}
	return b
}

// parseOptionalID reads an optional id field the validator already checked.
func parseOptionalID(s string) *uuid.UUID {
	if s == "" {
		return nil
	}
	id, err := uuid.Parse(s)
	if err != nil {
		return nil
	}
	return &id
}

// create stores m (a retry with the same request id returns the first
// result) and links it in SpiceDB.
func (n named[M]) create(ctx context.Context, requestID string, m M) (M, error) {
	var zero M
	tenantID, err := callerTenant(ctx)
	if err != nil {
		return zero, err
	}
	if n.check != nil {
		if err := n.check(m); err != nil {
			return zero, err
		}
	}
	row, err := n.toRow(m)
	if err != nil {
		return zero, err
	}
	if row.Name == "" {
		return zero, apierror.Field(n.field+".name", "is required")
	}
	if row.ProjectID != nil {
		// A foreign key alone would accept another tenant's project.
		if _, err := n.DB.Resources(store.Projects).Get(ctx, *row.ProjectID); err != nil {
			return zero, apierror.Field(n.field+".project_id", "no such project")
		}
	}
	row.RequestID = parseOptionalID(requestID)
	created, err := n.DB.Resources(n.kind).Create(ctx, row)
	if err != nil {
		return zero, err
	}
	// Linked on every try, so a retry after a crash between the two writes
	// completes the grant.
	if err := n.Grants.ResourceCreated(ctx, n.objType, row.ID, tenantID, row.ProjectID); err != nil {
		return zero, err
	}
	if created {
		n.changed(ctx, "created", row)
	}
	return n.fromRow(row), nil
}

// changed publishes "<type>.<what>" with the resource's id and name.
func (n named[M]) changed(ctx context.Context, what string, row *store.Resource) {
	data := map[string]any{n.objType + "_id": row.ID.String()}
	if row.Name != "" {
		data["name"] = row.Name
	}
	if row.ProjectID != nil {
		data["project_id"] = row.ProjectID.String()
	}
	n.publish(ctx, n.objType+"."+what, data)
}

func (n named[M]) get(ctx context.Context, id string) (M, error) {
	var zero M
	uid, err := parseID(id)
	if err != nil {
		return zero, err
	}
	row, err := n.DB.Resources(n.kind).Get(ctx, uid)
	if err != nil {
		return zero, err
	}
	return n.fromRow(row), nil
}

// listParams are a list request's common fields.
type listParams struct {
	pageSize     int32
	pageToken    string
	projectID    string
	nameContains string
	order        avbv1.ResourceOrder
}

func (n named[M]) list(ctx context.Context, p listParams) ([]M, string, error) {
	order := map[avbv1.ResourceOrder]store.Order{
		avbv1.ResourceOrder_RESOURCE_ORDER_CREATE_TIME_ASC: store.OldestFirst,
		avbv1.ResourceOrder_RESOURCE_ORDER_NAME_ASC:        store.NameAsc,
		avbv1.ResourceOrder_RESOURCE_ORDER_NAME_DESC:       store.NameDesc,
	}[p.order]
	rows, next, err := n.DB.Resources(n.kind).List(ctx, store.ResourceQuery{
		ProjectID: parseOptionalID(p.projectID), NameContains: p.nameContains, Order: order,
		Size: store.PageSize(p.pageSize), Token: p.pageToken,
	})
	if err != nil {
		return nil, "", err
	}
	out := make([]M, len(rows))
	for i := range rows {
		out[i] = n.fromRow(&rows[i])
	}
	return out, next, nil
}

// update applies the fields of m named by mask (every mutable field when
// the mask is empty) to the stored resource, under its row lock.
func (n named[M]) update(ctx context.Context, id string, m M, mask *fieldmaskpb.FieldMask) (M, error) {
	var zero M
	uid, err := parseID(id)
	if err != nil {
		return zero, err
	}
	paths := mask.GetPaths()
	for _, p := range paths {
		if slices.Contains(immutableFields, protoreflect.Name(p)) {
			return zero, apierror.Field("update_mask", p+" cannot be changed")
		}
	}
	if len(paths) == 0 {
		fields := m.ProtoReflect().Descriptor().Fields()
		for i := 0; i < fields.Len(); i++ {
			if name := fields.Get(i).Name(); !slices.Contains(immutableFields, name) {
				paths = append(paths, string(name))
			}
		}
	}
	row, err := n.DB.Resources(n.kind).Update(ctx, uid, func(row *store.Resource) error {
		cur := n.fromRow(row)
		if err := applyMask(cur, m, paths); err != nil {
			return apierror.Field("update_mask", err.Error())
		}
		if n.check != nil {
			if err := n.check(cur); err != nil {
				return err
			}
		}
		next, err := n.toRow(cur)
		if err != nil {
			return err
		}
		if next.Name == "" {
			return apierror.Field(n.field+".name", "cannot be empty")
		}
		row.Name, row.Spec, row.IsDefault = next.Name, next.Spec, next.IsDefault
		return nil
	})
	if err != nil {
		return zero, err
	}
	n.changed(ctx, "updated", row)
	return n.fromRow(row), nil
}

// delete removes the resource row. Its SpiceDB links stay: they reach no
// row, and they let the tenant's callers get not_found for it (an id never
// linked gets permission_denied).
func (n named[M]) delete(ctx context.Context, id string) error {
	uid, err := parseID(id)
	if err != nil {
		return err
	}
	if err := n.DB.Resources(n.kind).Delete(ctx, uid); err != nil {
		return err
	}
	n.changed(ctx, "deleted", &store.Resource{ID: uid})
	return nil
}
