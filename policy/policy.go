// Package policy reads the access policy each RPC declares in the contract
// (the avb.v1.access method option) so the interceptors can enforce it.
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

func lookup(procedure string) Rule {
	service, method, ok := strings.Cut(strings.TrimPrefix(procedure, "/"), "/")
	if !ok {
		return Rule{}
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		return Rule{}
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return Rule{}
	}
	md := sd.Methods().ByName(protoreflect.Name(method))
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
