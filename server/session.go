package server

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/workflows"
)

// NewSessionServer returns the SessionService handler.
func NewSessionServer(deps Voice) avbv1connect.SessionServiceHandler { return &sessionServer{deps} }

type sessionServer struct{ Voice }

func sessionStatus(s string) avbv1.SessionStatus {
	return avbv1.SessionStatus(enumValue(avbv1.SessionStatus_value, "SESSION_STATUS_", s))
}

func optID(id *uuid.UUID) string {
	if id == nil {
		return ""
	}
	return id.String()
}

func sessionToProto(s *store.Session) *avbv1.Session {
	cfg := &avbv1.SessionConfig{}
	_ = protojson.Unmarshal(s.Config, cfg)
	return &avbv1.Session{
		Id: s.ID.String(), TenantId: s.TenantID.String(), ProjectId: optID(s.ProjectID), ApiKeyId: optID(s.APIKeyID),
		Status: sessionStatus(s.Status), Config: cfg, Error: s.Error,
		Metrics: &avbv1.SessionMetrics{
			DurationSeconds: s.DurationSeconds, InputTokens: s.InputTokens, OutputTokens: s.OutputTokens,
			InputAudioSeconds: s.InputAudioSeconds, OutputAudioSeconds: s.OutputAudioSeconds, Turns: int32(s.Turns),
			ToolCalls: int32(s.ToolCalls),
		},
		CreateTime: ts(s.CreatedAt), StartTime: tsp(s.StartedAt), EndTime: tsp(s.EndedAt),
	}
}

func (s *sessionServer) CreateSession(ctx context.Context, req *connect.Request[avbv1.CreateSessionRequest]) (*connect.Response[avbv1.CreateSessionResponse], error) {
	sess, err := createSession(ctx, s.Voice, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.CreateSessionResponse{Session: sessionToProto(sess)}), nil
}

// createSession makes a session of the tenant in ctx from the project,
// voice config and persona m names, with m's config laid over them.
func createSession(ctx context.Context, v Voice, m *avbv1.CreateSessionRequest) (*store.Session, error) {
	cfg, err := layeredConfig(ctx, v.DB, m)
	if err != nil {
		return nil, err
	}
	if _, err := (&voiceServer{Voice: v}).callConfig(cfg); err != nil {
		return nil, err
	}
	raw, err := protojson.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	sess := &store.Session{Config: raw, RequestID: parseOptionalID(m.GetRequestId())}
	sess.APIKeyID, sess.UserID = sessionOwner(ctx)
	if m.GetProjectId() != "" {
		id, err := parseID(m.GetProjectId())
		if err != nil {
			return nil, err
		}
		sess.ProjectID = &id
	}
	if err := v.admitSession(ctx); err != nil {
		return nil, err
	}
	if err := v.DB.Sessions().Create(ctx, sess); err != nil {
		return nil, err
	}
	// The workflow owns the session from here: an unjoined session ends at
	// its idle timeout. A retry starts it again while the session waits
	// (finding it running, or starting what a failed first try did not).
	// The start runs in the background (retried while Temporal is
	// unreachable, and after a crash from sessions.workflow_started_at):
	// creating a session never waits on Temporal.
	if sess.Status == store.SessionCreated && v.Workflows != nil {
		v.Workflows.Ensure(workflowSession(sess, cfg, false))
	}
	return sess, nil
}

func (s *sessionServer) GetSession(ctx context.Context, req *connect.Request[avbv1.GetSessionRequest]) (*connect.Response[avbv1.GetSessionResponse], error) {
	id, err := parseID(req.Msg.GetSessionId())
	if err != nil {
		return nil, err
	}
	sess, err := s.DB.Sessions().Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.GetSessionResponse{Session: sessionToProto(sess)}), nil
}

func (s *sessionServer) ListSessions(ctx context.Context, req *connect.Request[avbv1.ListSessionsRequest]) (*connect.Response[avbv1.ListSessionsResponse], error) {
	m := req.Msg
	var f store.SessionFilter
	if m.GetStatus() != avbv1.SessionStatus_SESSION_STATUS_UNSPECIFIED {
		f.Status = enumWord(m.GetStatus().String(), "SESSION_STATUS_")
	}
	if m.GetProjectId() != "" {
		id, err := parseID(m.GetProjectId())
		if err != nil {
			return nil, err
		}
		f.ProjectID = &id
	}
	if m.GetCreatedAfter() != nil {
		t := m.GetCreatedAfter().AsTime()
		f.After = &t
	}
	if m.GetCreatedBefore() != nil {
		t := m.GetCreatedBefore().AsTime()
		f.Before = &t
	}
	rows, next, err := s.DB.Sessions().List(ctx, f, store.PageSize(m.GetPageSize()), m.GetPageToken())
	if err != nil {
		return nil, err
	}
	res := &avbv1.ListSessionsResponse{NextPageToken: next}
	for i := range rows {
		res.Sessions = append(res.Sessions, sessionToProto(&rows[i]))
	}
	return connect.NewResponse(res), nil
}

func (s *sessionServer) TerminateSession(ctx context.Context, req *connect.Request[avbv1.TerminateSessionRequest]) (*connect.Response[avbv1.TerminateSessionResponse], error) {
	id, err := parseID(req.Msg.GetSessionId())
	if err != nil {
		return nil, err
	}
	sess, err := s.DB.Sessions().Get(ctx, id)
	if err != nil {
		return nil, err
	}
	open := sess.Status == store.SessionActive || sess.Status == store.SessionCreated
	ending := false
	if open && s.Workflows != nil {
		// The session's workflow records the end, with the metrics it kept.
		cfg := &avbv1.SessionConfig{}
		_ = protojson.Unmarshal(sess.Config, cfg)
		s.Workflows.End(workflowSession(sess, cfg, sess.Status == store.SessionActive),
			workflows.End{Status: store.SessionTerminated, Reason: "terminated by request"}, nil)
		ending = true
	}
	if sess.Status == store.SessionActive && s.Bus != nil {
		// The instance holding the call ends it.
		if err := s.Bus.Publish(ctx, TopicSession, id.String()); err != nil {
			return nil, err
		}
		ending = true
	}
	if ending {
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if cur, err := s.DB.Sessions().Get(ctx, id); err == nil && cur.Status != store.SessionActive && cur.Status != store.SessionCreated {
				return connect.NewResponse(&avbv1.TerminateSessionResponse{Session: sessionToProto(cur)}), nil
			}
		}
	}
	if sess, err = s.DB.Sessions().Finish(ctx, id, store.SessionTerminated, "terminated by request", sess.SessionMetrics); err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.TerminateSessionResponse{Session: sessionToProto(sess)}), nil
}

func (s *sessionServer) ListSessionEvents(ctx context.Context, req *connect.Request[avbv1.ListSessionEventsRequest]) (*connect.Response[avbv1.ListSessionEventsResponse], error) {
	id, err := parseID(req.Msg.GetSessionId())
	if err != nil {
		return nil, err
	}
	if _, err := s.DB.Sessions().Get(ctx, id); err != nil {
		return nil, err
	}
	rows, next, err := s.DB.Sessions().Events(ctx, id, store.PageSize(req.Msg.GetPageSize()), req.Msg.GetPageToken())
	if err != nil {
		return nil, err
	}
	res := &avbv1.ListSessionEventsResponse{NextPageToken: next}
	for _, e := range rows {
		data := &structpb.Struct{}
		_ = protojson.Unmarshal(e.Data, data)
		res.Events = append(res.Events, &avbv1.SessionEvent{Id: e.ID.String(), SessionId: e.SessionID.String(),
			Type: e.Type, Data: data, CreateTime: ts(e.CreatedAt)})
	}
	return connect.NewResponse(res), nil
}
