package server_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
)

// Every RPC of the API declares its access policy (avb.v1.access), and a
// permission rule names a resource type and a permission.
func TestEveryRPCDeclaresAnAccessPolicy(t *testing.T) {
	t.Parallel()
	rpcs := 0
	protoregistry.GlobalFiles.RangeFilesByPackage("avb.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				rpcs++
				policy, _ := proto.GetExtension(md.Options(), avbv1.E_Access).(*avbv1.AccessPolicy)
				switch rule := policy.GetRule().(type) {
				case nil:
					t.Errorf("%s declares no (avb.v1.access) policy", md.FullName())
				case *avbv1.AccessPolicy_Permission:
					p := rule.Permission
					if p.GetResourceType() == "" || p.GetPermission() == "" {
						t.Errorf("%s: permission rule needs resource_type and permission: %v", md.FullName(), p)
					}
					if f := p.GetIdField(); f != "" && md.Input().Fields().ByName(protoreflect.Name(f)) == nil {
						t.Errorf("%s: id_field %q is not a field of %s", md.FullName(), f, md.Input().FullName())
					}
				case *avbv1.AccessPolicy_Public:
					if !rule.Public {
						t.Errorf("%s: public = false is not a policy", md.FullName())
					}
				case *avbv1.AccessPolicy_Authenticated:
					if !rule.Authenticated {
						t.Errorf("%s: authenticated = false is not a policy", md.FullName())
					}
				}
				if !strings.HasSuffix(string(sd.Name()), "Service") {
					t.Errorf("service %s must end in Service", sd.FullName())
				}
			}
		}
		return true
	})
	if rpcs == 0 {
		t.Fatal("no RPCs found in avb.v1: are the generated packages linked in?")
	}
}

// Every (avb.v1.required_fields) option names fields of the message field it
// is on, and every create request whose resource's name its rules let go
// empty declares the name required.
func TestRequiredFieldsNameRealFields(t *testing.T) {
	t.Parallel()
	declared := 0
	protoregistry.GlobalFiles.RangeFilesByPackage("avb.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Messages().Len() {
			md := fd.Messages().Get(i)
			for j := range md.Fields().Len() {
				f := md.Fields().Get(j)
				names, _ := proto.GetExtension(f.Options(), avbv1.E_RequiredFields).([]string)
				if len(names) > 0 && f.Message() == nil {
					t.Errorf("%s: required_fields on a field that is not a message", f.FullName())
					continue
				}
				for _, n := range names {
					declared++
					if f.Message().Fields().ByName(protoreflect.Name(n)) == nil {
						t.Errorf("%s: required field %q is not a field of %s", f.FullName(), n, f.Message().FullName())
					}
				}
			}
		}
		return true
	})
	for _, m := range []proto.Message{&avbv1.CreatePersonaRequest{}, &avbv1.CreateVoiceConfigRequest{}, &avbv1.CreateThemeRequest{}} {
		fd := m.ProtoReflect().Descriptor().Fields().ByNumber(2)
		if names, _ := proto.GetExtension(fd.Options(), avbv1.E_RequiredFields).([]string); len(names) != 1 || names[0] != "name" {
			t.Errorf("%s does not require its name", fd.FullName())
		}
	}
	if declared == 0 {
		t.Fatal("no required_fields declared")
	}
}
