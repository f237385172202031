package server

import (
	"context"

	"connectrpc.com/connect"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/store"
)

// NewVoiceConfigServer returns the VoiceConfigService handler.
func NewVoiceConfigServer(deps Identity) avbv1connect.VoiceConfigServiceHandler {
	return &voiceConfigServer{named[*avbv1.VoiceConfig]{Identity: deps, kind: store.VoiceConfigs, objType: "voice_config",
		field: "voice_config", new: func() *avbv1.VoiceConfig { return &avbv1.VoiceConfig{} }}}
}

type voiceConfigServer struct{ named[*avbv1.VoiceConfig] }

func (s *voiceConfigServer) CreateVoiceConfig(ctx context.Context, req *connect.Request[avbv1.CreateVoiceConfigRequest]) (*connect.Response[avbv1.CreateVoiceConfigResponse], error) {
	p, err := s.create(ctx, req.Msg.GetRequestId(), req.Msg.GetVoiceConfig())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.CreateVoiceConfigResponse{VoiceConfig: p}), nil
}

func (s *voiceConfigServer) GetVoiceConfig(ctx context.Context, req *connect.Request[avbv1.GetVoiceConfigRequest]) (*connect.Response[avbv1.GetVoiceConfigResponse], error) {
	p, err := s.get(ctx, req.Msg.GetVoiceConfigId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.GetVoiceConfigResponse{VoiceConfig: p}), nil
}

func (s *voiceConfigServer) ListVoiceConfigs(ctx context.Context, req *connect.Request[avbv1.ListVoiceConfigsRequest]) (*connect.Response[avbv1.ListVoiceConfigsResponse], error) {
	m := req.Msg
	items, next, err := s.list(ctx, listParams{pageSize: m.GetPageSize(), pageToken: m.GetPageToken(), projectID: m.GetProjectId(),
		nameContains: m.GetNameContains(), order: m.GetOrderBy()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.ListVoiceConfigsResponse{VoiceConfigs: items, NextPageToken: next}), nil
}

func (s *voiceConfigServer) UpdateVoiceConfig(ctx context.Context, req *connect.Request[avbv1.UpdateVoiceConfigRequest]) (*connect.Response[avbv1.UpdateVoiceConfigResponse], error) {
	p, err := s.update(ctx, req.Msg.GetVoiceConfigId(), req.Msg.GetVoiceConfig(), req.Msg.GetUpdateMask())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.UpdateVoiceConfigResponse{VoiceConfig: p}), nil
}

func (s *voiceConfigServer) DeleteVoiceConfig(ctx context.Context, req *connect.Request[avbv1.DeleteVoiceConfigRequest]) (*connect.Response[avbv1.DeleteVoiceConfigResponse], error) {
	if err := s.delete(ctx, req.Msg.GetVoiceConfigId()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.DeleteVoiceConfigResponse{}), nil
}
