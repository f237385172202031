// Package policy reads what each RPC declares in the contract: its access
// policy (the avb.v1.access method option), which the interceptors enforce,
// and what it records in the audit log (avb.v1.audit).
package policy

import (
	"iter"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
)

// Kind says what an RPC requires.
type Kind int

// Kinds of rules.
const (
	// Missing: no policy declared; such an RPC is refused (fail closed).
	Missing Kind = iota
	// Public RPCs need nothing.
	Public
	// Authenticated RPCs need credentials and a tenant.
	Authenticated
	// Permission RPCs need a permission on a resource.
	Permission
)

// Rule is one RPC's policy.
type Rule struct {
	Kind         Kind
	ResourceType string // "platform", "tenant", "project", ...
	Permission   string
	IDField      string
}

// NeedsTenant reports whether the RPC acts inside a tenant. Platform-level
// RPCs (resource type "platform") and public ones do not.
func (r Rule) NeedsTenant() bool {
	return r.Kind == Authenticated || (r.Kind == Permission && r.ResourceType != "platform")
}

var cache sync.Map // procedure -> Rule

// For returns the rule of a procedure ("/avb.v1.FooService/Bar").
func For(procedure string) Rule {
	if r, ok := cache.Load(procedure); ok {
		return r.(Rule)
	}
	r := lookup(procedure)
	cache.Store(procedure, r)
	return r
}

// method finds a procedure's descriptor (nil if the contract has none).
func method(procedure string) protoreflect.MethodDescriptor {
	service, name, ok := strings.Cut(strings.TrimPrefix(procedure, "/"), "/")
	if !ok {
		return nil
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		return nil
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil
	}
	return sd.Methods().ByName(protoreflect.Name(name))
}

// Audit is what an RPC records in the audit log (avb.v1.audit).
type Audit struct {
	// Action ("create", "update", "permission_change"...) and ResourceType
	// name the entry; both are empty when the RPC records nothing.
	Action       string
	ResourceType string
	// NotAudited is the declared reason a state-changing RPC records nothing.
	NotAudited string
}

var audits sync.Map // procedure -> Audit

// AuditOf returns the audit declaration of a procedure.
func AuditOf(procedure string) Audit {
	if a, ok := audits.Load(procedure); ok {
		return a.(Audit)
	}
	var a Audit
	if md := method(procedure); md != nil {
		r, _ := proto.GetExtension(md.Options(), avbv1.E_Audit).(*avbv1.AuditRule)
		if rec := r.GetRecord(); rec != nil && rec.GetAction() != avbv1.AuditAction_AUDIT_ACTION_UNSPECIFIED {
			a.Action = strings.ToLower(strings.TrimPrefix(rec.GetAction().String(), "AUDIT_ACTION_"))
			a.ResourceType = rec.GetResourceType()
		}
		a.NotAudited = r.GetNotAudited()
	}
	audits.Store(procedure, a)
	return a
}

func lookup(procedure string) Rule {
	md := method(procedure)
	if md == nil {
		return Rule{}
	}
	p, _ := proto.GetExtension(md.Options(), avbv1.E_Access).(*avbv1.AccessPolicy)
	switch r := p.GetRule().(type) {
	case *avbv1.AccessPolicy_Public:
		if r.Public {
			return Rule{Kind: Public}
		}
	case *avbv1.AccessPolicy_Authenticated:
		if r.Authenticated {
			return Rule{Kind: Authenticated}
		}
	case *avbv1.AccessPolicy_Permission:
		return Rule{Kind: Permission, ResourceType: r.Permission.GetResourceType(),
			Permission: r.Permission.GetPermission(), IDField: r.Permission.GetIdField()}
	}
	return Rule{}
}

// Methods yields every RPC of the avb.v1 contract, service by service.
func Methods() iter.Seq[protoreflect.MethodDescriptor] {
	return func(yield func(protoreflect.MethodDescriptor) bool) {
		protoregistry.GlobalFiles.RangeFilesByPackage("avb.v1", func(fd protoreflect.FileDescriptor) bool {
			for i := range fd.Services().Len() {
				sd := fd.Services().Get(i)
				for j := range sd.Methods().Len() {
					if !yield(sd.Methods().Get(j)) {
						return false
					}
				}
			}
			return true
		})
	}
}
