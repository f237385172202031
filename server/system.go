package server

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
)

// NewSystemServer returns the SystemService handler; signIn (nil: none) is
// how browser apps sign users in.
func NewSystemServer(version, profile string, signIn *avbv1.SignIn) avbv1connect.SystemServiceHandler {
	return &systemServer{version: version, profile: profile, signIn: signIn}
}

type systemServer struct {
	version string
	profile string
	signIn  *avbv1.SignIn
}

func (s *systemServer) GetServerInfo(context.Context, *connect.Request[avbv1.GetServerInfoRequest]) (*connect.Response[avbv1.GetServerInfoResponse], error) {
	return connect.NewResponse(&avbv1.GetServerInfoResponse{
		Version:    s.version,
		ApiVersion: "avb.v1",
		ServerTime: timestamppb.New(time.Now()),
		Profile:    s.profile,
		SignIn:     s.signIn,
	}), nil
}
