package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/agentvoicebox/avb/authn"
	"github.com/agentvoicebox/avb/platform/logging"
	"github.com/agentvoicebox/avb/policy"
	"github.com/agentvoicebox/avb/server/middleware"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

// AuditInterceptor records the audit entry of every RPC that declares one
// ((avb.v1.audit) in the contract). The entry rides in the context: the
// first transaction of the handler that writes appends it just before its
// COMMIT (store.WithAudit), so the entry exists exactly when the change
// does. An RPC that succeeds without such a transaction (its change lives
// in another system, or in platform tables) records its entry in a
// transaction of its own once it has succeeded.
func AuditInterceptor(db *store.DB, log *slog.Logger) connect.Interceptor {
	return auditInterceptor{db, log}
}

type auditInterceptor struct {
	db  *store.DB
	log *slog.Logger
}

func (i auditInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		a := policy.AuditOf(req.Spec().Procedure)
		if a.Action == "" {
			return next(ctx, req)
		}
		msg, _ := req.Any().(proto.Message)
		ctx, audited := store.WithAudit(ctx, auditEntry(ctx, a, req.Header(), msg))
		res, err := next(ctx, req)
		if err == nil {
			var out proto.Message
			if res != nil {
				out, _ = res.Any().(proto.Message)
			}
			i.settle(ctx, audited, out)
		}
		return res, err
	}
}

func (i auditInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i auditInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		a := policy.AuditOf(conn.Spec().Procedure)
		if a.Action == "" {
			return next(ctx, conn)
		}
		ctx, audited := store.WithAudit(ctx, auditEntry(ctx, a, conn.RequestHeader(), nil))
		err := next(ctx, conn)
		if err == nil {
			i.settle(ctx, audited, nil)
		}
		return err
	}
}

// auditWriteTimeout bounds an entry written after its RPC succeeded.
const auditWriteTimeout = 5 * time.Second

// settle records, in a transaction of its own, the entry of an RPC that
// succeeded without writing it with a change.
func (i auditInterceptor) settle(ctx context.Context, audited *store.Audited, res proto.Message) {
	if audited.Recorded() {
		return
	}
	e := audited.Entry()
	if e.ResourceID == "" {
		e.ResourceID = idField(res, e.ResourceType)
	}
	if _, ok := tenancy.ID(ctx); !ok {
		// A platform RPC on a tenant (create, suspend...) records in
		// that tenant's log.
		id, err := uuid.Parse(e.ResourceID)
		if e.ResourceType != "tenant" || err != nil {
			i.log.WarnContext(ctx, "audit entry without a tenant not recorded", "action", e.Action, "resource_type", e.ResourceType)
			return
		}
		ctx = tenancy.With(ctx, id)
	}
	// The caller has its answer; the entry is written even if it hangs up.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditWriteTimeout)
	defer cancel()
	if err := i.db.AuditLog().Append(wctx, &e); err != nil {
		i.log.ErrorContext(ctx, "audit entry not recorded", "action", e.Action, "resource_type", e.ResourceType,
			"resource_id", e.ResourceID, "error", err.Error())
	}
}

// auditEntry is what the request tells about its entry: who, from where,
// the declared action and resource type, the resource the request names
// and, until the handler describes the change, the request's fields.
func auditEntry(ctx context.Context, a policy.Audit, h http.Header, req proto.Message) store.AuditEntry {
	e := store.AuditEntry{ActorType: "system", Action: a.Action, ResourceType: a.ResourceType,
		IPAddress: middleware.ClientIP(ctx), UserAgent: h.Get("User-Agent"),
		RequestID: logging.RequestID(ctx), ResourceID: idField(req, a.ResourceType)}
	if p := authn.PrincipalFrom(ctx); p != nil {
		switch {
		case p.Kind == authn.KindUser || (p.Kind == authn.KindClientToken && p.UserID != uuid.Nil):
			e.ActorType, e.ActorEmail = "user", p.Email
			if p.UserID != uuid.Nil {
				id := p.UserID
				e.ActorID = &id
			}
		case p.APIKeyID != uuid.Nil:
			id := p.APIKeyID
			e.ActorType, e.ActorID = "api_key", &id
		}
	}
	if e.ResourceID == "" && e.ResourceType == "user" && e.ActorType == "user" && e.ActorID != nil {
		e.ResourceID = e.ActorID.String() // the caller's own account
	}
	e.Description = strings.ReplaceAll(a.Action, "_", " ") + " " + strings.ReplaceAll(a.ResourceType, "_", " ")
	if req != nil {
		e.NewValues = requestValues(req)
	}
	return e
}

// idField is the id a message holds of a resource type: its
// "<type>_id" field (a request naming the resource), else its "id", else
// that of a message it holds (a response holding what it made).
func idField(m proto.Message, resourceType string) string {
	if m == nil {
		return ""
	}
	r := m.ProtoReflect()
	fields := r.Descriptor().Fields()
	for _, name := range []protoreflect.Name{protoreflect.Name(resourceType + "_id"), "id"} {
		if f := fields.ByName(name); f != nil && f.Kind() == protoreflect.StringKind {
			if v := r.Get(f).String(); v != "" {
				return v
			}
		}
	}
	for n := range fields.Len() {
		f := fields.Get(n)
		if f.Kind() == protoreflect.MessageKind && !f.IsList() && !f.IsMap() && r.Has(f) {
			if id := idField(r.Get(f).Message().Interface(), resourceType); id != "" {
				return id
			}
		}
	}
	return ""
}

// requestValues is what a request sets, as an entry's new values: for an
// update with a field mask, only the masked fields of what it updates.
func requestValues(req proto.Message) json.RawMessage {
	b, err := protojson.Marshal(req)
	if err != nil || len(b) <= 2 {
		return nil
	}
	r := req.ProtoReflect()
	maskField := r.Descriptor().Fields().ByName("update_mask")
	if maskField == nil || !r.Has(maskField) {
		return store.AuditValues(json.RawMessage(b))
	}
	mask, _ := r.Get(maskField).Message().Interface().(*fieldmaskpb.FieldMask)
	// The message being updated: the request's other message field.
	fields := r.Descriptor().Fields()
	for n := range fields.Len() {
		f := fields.Get(n)
		if f == maskField || f.Kind() != protoreflect.MessageKind || f.IsList() || f.IsMap() || !r.Has(f) {
			continue
		}
		target := r.Get(f).Message()
		out := map[string]json.RawMessage{}
		full, _ := protojson.Marshal(target.Interface())
		var all map[string]json.RawMessage
		_ = json.Unmarshal(full, &all)
		for _, path := range mask.GetPaths() {
			top, _, _ := strings.Cut(path, ".")
			if fd := target.Descriptor().Fields().ByName(protoreflect.Name(top)); fd != nil {
				if v, ok := all[fd.JSONName()]; ok {
					out[fd.JSONName()] = v
				} else {
					out[fd.JSONName()] = json.RawMessage("null")
				}
			}
		}
		return store.AuditValues(out)
	}
	return store.AuditValues(json.RawMessage(b))
}
