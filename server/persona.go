package server

import (
	"context"

	"connectrpc.com/connect"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/store"
)

// NewPersonaServer returns the PersonaService handler.
func NewPersonaServer(deps Identity) avbv1connect.PersonaServiceHandler {
	return &personaServer{named[*avbv1.Persona]{Identity: deps, kind: store.Personas, objType: "persona",
		field: "persona", new: func() *avbv1.Persona { return &avbv1.Persona{} },
		check: func(p *avbv1.Persona) error {
			_, err := compileTools("persona.tools", p.GetTools(), deps.Tools.RequireHTTPS, deps.Tools.guard())
			return err
		}}}
}

type personaServer struct{ named[*avbv1.Persona] }

func (s *personaServer) CreatePersona(ctx context.Context, req *connect.Request[avbv1.CreatePersonaRequest]) (*connect.Response[avbv1.CreatePersonaResponse], error) {
	p, err := s.create(ctx, req.Msg.GetRequestId(), req.Msg.GetPersona())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.CreatePersonaResponse{Persona: p}), nil
}

func (s *personaServer) GetPersona(ctx context.Context, req *connect.Request[avbv1.GetPersonaRequest]) (*connect.Response[avbv1.GetPersonaResponse], error) {
	p, err := s.get(ctx, req.Msg.GetPersonaId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.GetPersonaResponse{Persona: p}), nil
}

func (s *personaServer) ListPersonas(ctx context.Context, req *connect.Request[avbv1.ListPersonasRequest]) (*connect.Response[avbv1.ListPersonasResponse], error) {
	m := req.Msg
	items, next, err := s.list(ctx, listParams{pageSize: m.GetPageSize(), pageToken: m.GetPageToken(), projectID: m.GetProjectId(),
		nameContains: m.GetNameContains(), order: m.GetOrderBy()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.ListPersonasResponse{Personas: items, NextPageToken: next}), nil
}

func (s *personaServer) UpdatePersona(ctx context.Context, req *connect.Request[avbv1.UpdatePersonaRequest]) (*connect.Response[avbv1.UpdatePersonaResponse], error) {
	p, err := s.update(ctx, req.Msg.GetPersonaId(), req.Msg.GetPersona(), req.Msg.GetUpdateMask())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.UpdatePersonaResponse{Persona: p}), nil
}

func (s *personaServer) DeletePersona(ctx context.Context, req *connect.Request[avbv1.DeletePersonaRequest]) (*connect.Response[avbv1.DeletePersonaResponse], error) {
	if err := s.delete(ctx, req.Msg.GetPersonaId()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.DeletePersonaResponse{}), nil
}
