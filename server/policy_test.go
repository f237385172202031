package server_test

import (
	"strings"
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/policy"
)

// Every RPC that is not a read declares what it records in the audit log
// (avb.v1.audit): an action and a resource type, or why it records nothing.
// Reads declare nothing.
func TestEveryStateChangingRPCDeclaresItsAudit(t *testing.T) {
	t.Parallel()
	audited := 0
	for md := range policy.Methods() {
		procedure := "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
		a := policy.AuditOf(procedure)
		read := md.Options().(*descriptorpb.MethodOptions).GetIdempotencyLevel() == descriptorpb.MethodOptions_NO_SIDE_EFFECTS
		switch {
		case read && (a.Action != "" || a.NotAudited != ""):
			t.Errorf("%s is a read (NO_SIDE_EFFECTS) yet declares an audit rule", procedure)
		case !read && a.Action == "" && a.NotAudited == "":
			t.Errorf("%s changes state and declares no (avb.v1.audit) rule: an action and resource type, or not_audited with the reason", procedure)
		case a.Action != "" && a.ResourceType == "":
			t.Errorf("%s: audit action %s without a resource type", procedure, a.Action)
		case a.Action != "":
			audited++
		}
	}
	if audited < 30 {
		t.Fatalf("only %d RPCs record audit entries", audited)
	}
}

// Every RPC of the API declares its access policy (avb.v1.access), and a
// permission rule names a resource type and a permission.
func TestEveryRPCDeclaresAnAccessPolicy(t *testing.T) {
	t.Parallel()
	rpcs := 0
	for md := range policy.Methods() {
		rpcs++
		access, _ := proto.GetExtension(md.Options(), avbv1.E_Access).(*avbv1.AccessPolicy)
		switch rule := access.GetRule().(type) {
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
		if svc := md.Parent(); !strings.HasSuffix(string(svc.Name()), "Service") {
			t.Errorf("service %s must end in Service", svc.FullName())
		}
	}
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

// Every string, bytes, list and map field a request can carry, however deep,
// has a validation rule that bounds it, but for the known exceptions: ids
// the server assigns (ignored when sent) and audio, which the call bounds
// itself with its own reason (audio_frame_too_large).
func TestEveryRequestFieldIsBounded(t *testing.T) {
	t.Parallel()
	exempt := map[string]bool{"avb.v1.AudioAppend.audio": true, "avb.v1.SendAudioRequest.audio": true, "avb.v1.TranscribeRequest.audio": true}
	for _, m := range []string{"Persona", "Project", "Theme", "VoiceConfig", "PhoneNumber", "SipTrunk"} {
		exempt["avb.v1."+m+".id"], exempt["avb.v1."+m+".tenant_id"] = true, true
	}
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] || md.ParentFile().Package() != "avb.v1" {
			return
		}
		seen[md.FullName()] = true
		for i := range md.Fields().Len() {
			f := md.Fields().Get(i)
			rules, _ := proto.GetExtension(f.Options(), validate.E_Field).(*validate.FieldRules)
			bounded := rules.GetType() != nil || len(rules.GetCel()) > 0
			sized := f.Kind() == protoreflect.StringKind || f.Kind() == protoreflect.BytesKind || f.IsList() || f.IsMap()
			if sized && !bounded && !exempt[string(f.FullName())] {
				t.Errorf("%s has no validation rule bounding it", f.FullName())
			}
			if f.Message() != nil {
				walk(f.Message())
			}
		}
	}
	for md := range policy.Methods() {
		walk(md.Input())
	}
	if len(seen) < 50 {
		t.Fatalf("walked only %d request messages", len(seen))
	}
}
