package app_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/policy"
	"github.com/agentvoicebox/avb/store"
)

// grpcConn dials the platform with grpc-go over HTTP/2 without TLS.
func grpcConn(t *testing.T, p *platform) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(strings.TrimPrefix(p.base, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// as puts a bearer credential into a grpc-go call's metadata.
func as(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// grpcReason reads the code and ErrorInfo reason of a grpc-go error, and the
// fields a BadRequest detail names.
func grpcReason(t *testing.T, err error) (codes.Code, string, []string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("not a gRPC status: %v", err)
	}
	var reason string
	var fields []string
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			reason = d.GetReason()
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	return st.Code(), reason, fields
}

// A stock grpc-go client (not connect-go) over the gRPC protocol: unary
// calls with the credential in metadata, errors with their reason and field
// violations in grpc-status-details-bin, and a server stream.
func TestGRPCGoClient(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("grpcgo", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	viewer := p.token("vic", ten.ID.String(), "viewer")
	conn := grpcConn(t, p)
	ctx := t.Context()

	// The subscription is live once its first heartbeat arrives.
	sub, err := conn.NewStream(as(ctx, viewer), &grpc.StreamDesc{ServerStreams: true}, avbv1connect.EventServiceSubscribeProcedure)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SendMsg(&avbv1.SubscribeRequest{Types: []string{"project.created"}}); err != nil {
		t.Fatal(err)
	}
	if err := sub.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var first avbv1.SubscribeResponse
	if err := sub.RecvMsg(&first); err != nil || first.GetHeartbeat() == nil {
		t.Fatalf("first message %v, %v; want a heartbeat", &first, err)
	}

	var created avbv1.CreateProjectResponse
	if err := conn.Invoke(as(ctx, admin), avbv1connect.ProjectServiceCreateProjectProcedure,
		&avbv1.CreateProjectRequest{Name: "over grpc", VoiceDefaults: &avbv1.SessionConfig{Voice: "en-us"}}, &created); err != nil {
		t.Fatal(err)
	}
	var listed avbv1.ListProjectsResponse
	if err := conn.Invoke(as(ctx, viewer), avbv1connect.ProjectServiceListProjectsProcedure, &avbv1.ListProjectsRequest{}, &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed.GetProjects()) != 1 || listed.GetProjects()[0].GetId() != created.GetProject().GetId() ||
		listed.GetProjects()[0].GetVoiceDefaults().GetVoice() != "en-us" {
		t.Fatalf("listed %v, created %v", &listed, &created)
	}
	var ev avbv1.SubscribeResponse
	if err := sub.RecvMsg(&ev); err != nil {
		t.Fatal(err)
	}
	if ev.GetEvent().GetType() != "project.created" || ev.GetEvent().GetData().GetFields()["project_id"].GetStringValue() != created.GetProject().GetId() {
		t.Fatalf("event %v", &ev)
	}

	for _, tc := range []struct {
		name   string
		ctx    context.Context
		req    *avbv1.CreateProjectRequest
		code   codes.Code
		reason string
		fields []string
	}{
		{"no credentials", ctx, &avbv1.CreateProjectRequest{Name: "x"}, codes.Unauthenticated, "unauthenticated", nil},
		{"viewer", as(ctx, viewer), &avbv1.CreateProjectRequest{Name: "x"}, codes.PermissionDenied, "permission_denied", nil},
		{"duplicate", as(ctx, admin), &avbv1.CreateProjectRequest{Name: "over grpc"}, codes.AlreadyExists, "already_exists", nil},
		{"invalid", as(ctx, admin), &avbv1.CreateProjectRequest{Name: "", Description: strings.Repeat("d", 1001)},
			codes.InvalidArgument, "validation_failed", []string{"name", "description"}},
	} {
		err := conn.Invoke(tc.ctx, avbv1connect.ProjectServiceCreateProjectProcedure, tc.req, &avbv1.CreateProjectResponse{})
		code, reason, fields := grpcReason(t, err)
		if code != tc.code || reason != tc.reason || !slices.Equal(fields, tc.fields) {
			t.Errorf("%s: %v %q %v, want %v %q %v", tc.name, code, reason, fields, tc.code, tc.reason, tc.fields)
		}
	}
}

// What grpcurl does first: list the services by server reflection (v1) and
// resolve each one's file, with its imports, into descriptors that describe
// every method, without the client holding any of the protos.
func TestGRPCReflectionDescribesEveryService(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	conn := grpcConn(t, p)
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ask := func(req *reflectionpb.ServerReflectionRequest) *reflectionpb.ServerReflectionResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		res, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if e := res.GetErrorResponse(); e != nil {
			t.Fatalf("reflection: %s", e.GetErrorMessage())
		}
		return res
	}

	var listed []string
	for _, s := range ask(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}).GetListServicesResponse().GetService() {
		listed = append(listed, s.GetName())
	}
	var want []string
	for md := range policy.Methods() {
		if svc := string(md.Parent().FullName()); !slices.Contains(want, svc) {
			want = append(want, svc)
		}
	}
	for _, s := range append(want, "grpc.health.v1.Health") {
		if !slices.Contains(listed, s) {
			t.Errorf("reflection does not list %s (it lists %v)", s, listed)
		}
	}

	// Describe each service from the descriptors the server sends alone.
	methods := 0
	for _, svc := range want {
		res := ask(&reflectionpb.ServerReflectionRequest{
			MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: svc},
		})
		var files []*descriptorpb.FileDescriptorProto
		for _, b := range res.GetFileDescriptorResponse().GetFileDescriptorProto() {
			var fd descriptorpb.FileDescriptorProto
			if err := proto.Unmarshal(b, &fd); err != nil {
				t.Fatal(err)
			}
			files = append(files, &fd)
		}
		found := false
		for _, fd := range files {
			for _, sd := range fd.GetService() {
				if fd.GetPackage()+"."+sd.GetName() != svc {
					continue
				}
				found = true
				methods += len(sd.GetMethod())
				for _, m := range sd.GetMethod() {
					if m.GetInputType() == "" || m.GetOutputType() == "" {
						t.Errorf("%s/%s has no message types", svc, m.GetName())
					}
				}
			}
		}
		if !found {
			t.Errorf("no descriptor describes %s", svc)
		}
	}
	t.Logf("%d services, %d methods described by reflection", len(want), methods)
	if methods < len(want) {
		t.Fatalf("only %d methods described", methods)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("reflection stream ended with %v", err)
	}
}
