package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentvoicebox/avb/apierror"
	"github.com/agentvoicebox/avb/authn"
	"github.com/agentvoicebox/avb/billing"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/platform/invalidation"
	"github.com/agentvoicebox/avb/platform/logging"
	"github.com/agentvoicebox/avb/platform/metrics"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
	"github.com/agentvoicebox/avb/voice"
	"github.com/agentvoicebox/avb/voice/calllimit"
	"github.com/agentvoicebox/avb/voice/llm"
	"github.com/agentvoicebox/avb/workflows"
)

// heartbeatEvery is how long a live stream may be quiet before a heartbeat.
const heartbeatEvery = 15 * time.Second

// Voice are the dependencies of the voice service.
type Voice struct {
	DB           *store.DB
	ClientTokens *authn.ClientTokens
	Providers    voice.Providers
	Limiter      *calllimit.Limiter
	Bus          *invalidation.Bus
	// Workflows, when set, runs each session as a SessionWorkflow.
	Workflows *workflows.Reporter
	// Metrics, when set, receives session and turn-latency metrics.
	Metrics *metrics.Metrics
	Log     *slog.Logger
	// ExposeInternal gives clients the provider's own error text
	// (AVB_EXPOSE_INTERNAL_ERRORS, development only).
	ExposeInternal bool
	// Tenant, when set, is the cached tenant lookup (its voice defaults
	// fill what a session leaves unset); otherwise the database is read.
	Tenant func(ctx context.Context, id uuid.UUID) (*store.Tenant, error)
	// Models picks the language model a session names ("" or "scripted":
	// the scripted model); an error means the model is not available.
	Models func(ctx context.Context, name string) (llm.Model, error)
	// Quotas, when set, refuses new sessions past a monthly quota (per the
	// tier's policy) and fires usage alerts.
	Quotas *billing.Quotas
	// Tools runs webhook tools and says whether their URLs must be https.
	Tools Tools
	// Address is how the other instances reach this one (AVB_ADVERTISE_URL):
	// a call's slot names it, and the browser path's requests for a call
	// held here that reach another instance are forwarded to it.
	Address func() string
	// Draining, when closed, tells every live call to move to another
	// instance (a SessionMoving event); MoveDeadline is how long the old
	// stream then stays up.
	Draining     <-chan struct{}
	MoveDeadline time.Duration
	// STTEngine names the speech recognizer ("embedded": pocketsphinx,
	// which with phrases listens for them only; "openai").
	STTEngine string
}

// address is how the other instances reach this one ("" unknown).
func (v Voice) address() string {
	if v.Address == nil {
		return ""
	}
	return v.Address()
}

// tenant reads a tenant, through the cache when there is one.
func (v Voice) tenant(ctx context.Context, id uuid.UUID) (*store.Tenant, error) {
	if v.Tenant != nil {
		return v.Tenant(ctx, id)
	}
	return v.DB.Tenants().Get(ctx, id)
}

// admitSession checks the caller's tenant may start one more session.
func (v Voice) admitSession(ctx context.Context) error {
	if v.Quotas == nil {
		return nil
	}
	tenantID, err := callerTenant(ctx)
	if err != nil {
		return err
	}
	t, err := v.tenant(ctx, tenantID)
	if err != nil {
		return err
	}
	err = v.Quotas.AdmitSession(ctx, t)
	if v.Metrics != nil {
		if metric := apierror.Info(err).GetMetadata()["metric"]; metric != "" {
			v.Metrics.QuotaRefusals.WithLabelValues(metric).Inc()
		}
	}
	return err
}

// NewVoiceServer returns the VoiceService handler.
func NewVoiceServer(deps Voice) avbv1connect.VoiceServiceHandler {
	s := &voiceServer{Voice: deps, peers: newPeers()}
	if deps.Bus != nil {
		deps.Bus.Handle(TopicSession, func(key string) {
			raw, reason, _ := strings.Cut(key, "|")
			id, err := uuid.Parse(raw)
			if err != nil {
				return
			}
			if reason == "" {
				reason = "terminated by request"
			}
			if v, ok := s.live.Load(id); ok {
				l := v.(*liveCall)
				l.mu.Lock()
				l.endErr = apierror.New(connect.CodeAborted, avbv1.ErrorReason_ERROR_REASON_SESSION_NOT_LIVE, "the session ended: "+reason)
				l.mu.Unlock()
				go s.finish(context.Background(), l, store.SessionTerminated, reason)
			}
		})
	}
	return s
}

type voiceServer struct {
	Voice
	live sync.Map // session id -> *liveCall: every call live on this server
	// peers forward the browser path's requests to the instance holding
	// their call.
	peers *peers
}

// TopicSession is the invalidation topic that ends a live session on
// whichever instance holds it (TerminateSession, or its workflow).
const TopicSession = "session"

// EndLiveCallKey is the TopicSession key that ends a live session and tells
// its caller why.
func EndLiveCallKey(sessionID, reason string) string {
	if reason == "" {
		return sessionID
	}
	return sessionID + "|" + reason
}

// liveCall is a session with a call running on this server.
type liveCall struct {
	tenant  uuid.UUID
	session *store.Session
	call    *voice.Call
	release func()
	started time.Time

	// workflow: the session's SessionWorkflow receives its turns (started
	// in the background if it is not running yet); it, not the call,
	// records the session's end and metrics.
	workflow bool
	wf       workflows.Session
	// callID and turns number this call's turn reports, so the workflow
	// counts a report delivered twice (a retried signal) once.
	callID string
	turns  int

	mu      sync.Mutex
	metrics store.SessionMetrics
	inMS    float64
	ended   bool
	// reportedInMS is the input audio already reported to the workflow.
	reportedInMS float64
	// lastTranscript is the caller's latest final transcript (pump goroutine only).
	lastTranscript string
	// endErr is the status a call ended by the platform gives its caller.
	endErr error
	// expose: provider errors reach the client in full (development);
	// requestID names the stream in what the client is told instead.
	expose    bool
	requestID string
	// configure checks a configuration update.
	configure func(*avbv1.SessionConfig) (voice.Config, error)
	// resumed: the call rejoined a session a call held before, restoring
	// resumedTurns turns of its conversation.
	resumed      bool
	resumedTurns int
	// pinned: the call cannot move to another instance (a phone call: its
	// media goes to this one's address).
	pinned bool
	// moving: the instance drains and the call was told to move; its end
	// here is not the session's end.
	moving atomic.Bool
	// recognition is what the call's speech recognition can hear.
	recognition *avbv1.Recognition
}

// updateConfig checks a configuration update, with its phrases completed
// as at the start.
func (s *voiceServer) updateConfig(c *avbv1.SessionConfig) (voice.Config, error) {
	cfg, err := s.callConfig(c)
	if err == nil {
		s.recognition(&cfg)
	}
	return cfg, err
}

// scriptedModel reports whether a model name is the scripted model.
func scriptedModel(name string) bool { return name == "" || name == "scripted" }

// scriptedPhrases are the scripted model's phrases, expanded once (calls
// only read them).
var scriptedPhrases = sync.OnceValue(llm.DefaultScript.Phrases)

// recognitionExamples is how many phrases SessionStarted shows.
const recognitionExamples = 5

// recognition completes a call's phrases and says what its recognition
// hears. The embedded recognizer without phrases runs open-vocabulary,
// which it does badly; a session that set none and is answered by the
// scripted model listens for what that model understands instead.
func (s *voiceServer) recognition(cfg *voice.Config) *avbv1.Recognition {
	r := &avbv1.Recognition{Engine: s.STTEngine}
	if s.STTEngine != "embedded" {
		return r
	}
	if len(cfg.Phrases) == 0 && scriptedModel(cfg.Model) {
		cfg.Phrases, r.FromModel = scriptedPhrases(), true
	}
	r.PhrasesOnly, r.Phrases = len(cfg.Phrases) > 0, int32(len(cfg.Phrases))
	r.Examples = cfg.Phrases[:min(len(cfg.Phrases), recognitionExamples)]
	return r
}

// holderSep separates the instance's address from the call in the name of
// a call's slot.
const holderSep = "#"

// conversationTurns is how much of a session's conversation a rejoining
// call restores.
const conversationTurns = 50

// conversation is a session's recorded conversation, as model history.
func (s *voiceServer) conversation(ctx context.Context, id uuid.UUID) ([]llm.Message, error) {
	events, err := s.DB.Sessions().Conversation(ctx, id, 2*conversationTurns)
	if err != nil {
		return nil, err
	}
	var out []llm.Message
	for _, e := range events {
		var d struct {
			Text string `json:"text"`
		}
		if json.Unmarshal(e.Data, &d) != nil || d.Text == "" {
			continue
		}
		role := "user"
		if e.Type == "response" {
			role = "assistant"
		}
		out = append(out, llm.Message{Role: role, Content: d.Text})
	}
	return out, nil
}

// userTurns counts the caller's turns in a history.
func userTurns(h []llm.Message) int {
	n := 0
	for _, m := range h {
		if m.Role == "user" {
			n++
		}
	}
	return n
}

func voiceError(err error) error {
	switch {
	case errors.Is(err, voice.ErrInputOverflow):
		return apierror.New(connect.CodeResourceExhausted, avbv1.ErrorReason_ERROR_REASON_AUDIO_TOO_FAST, err.Error())
	case errors.Is(err, voice.ErrFrameTooLarge):
		return apierror.New(connect.CodeResourceExhausted, avbv1.ErrorReason_ERROR_REASON_AUDIO_FRAME_TOO_LARGE, err.Error())
	case errors.Is(err, voice.ErrSlowClient):
		return apierror.New(connect.CodeResourceExhausted, avbv1.ErrorReason_ERROR_REASON_CLIENT_TOO_SLOW, err.Error())
	case errors.Is(err, calllimit.ErrLimit):
		return apierror.New(connect.CodeResourceExhausted, avbv1.ErrorReason_ERROR_REASON_CALL_LIMIT_EXCEEDED, err.Error())
	case errors.Is(err, voice.ErrToolCallNotOpen):
		return apierror.New(connect.CodeFailedPrecondition, avbv1.ErrorReason_ERROR_REASON_TOOL_CALL_NOT_OPEN, err.Error())
	case errors.Is(err, store.ErrSessionEnded), errors.Is(err, voice.ErrClosed):
		return apierror.New(connect.CodeFailedPrecondition, avbv1.ErrorReason_ERROR_REASON_SESSION_NOT_LIVE, "the session has ended")
	}
	return err
}

// errWrongSession: a client token bound to one session used for another.
var errWrongSession = apierror.New(connect.CodePermissionDenied, avbv1.ErrorReason_ERROR_REASON_PERMISSION_DENIED,
	"this client token is for another session")

// mayUseSession checks a session-bound client token against the session a
// request names ("" = a new session).
func mayUseSession(ctx context.Context, sessionID string) error {
	p := authn.PrincipalFrom(ctx)
	if p == nil || p.Kind != authn.KindClientToken || p.SessionID == uuid.Nil {
		return nil
	}
	if sessionID != p.SessionID.String() {
		return errWrongSession
	}
	return nil
}

// open starts or joins a session and starts its call.
func (s *voiceServer) open(ctx context.Context, start *avbv1.SessionStart) (*liveCall, error) {
	tenantID, err := callerTenant(ctx)
	if err != nil {
		return nil, err
	}
	if err := mayUseSession(ctx, start.GetSessionId()); err != nil {
		return nil, err
	}
	var sess *store.Session
	cfg := start.GetConfig()
	if start.GetSessionId() != "" {
		id, err := parseID(start.GetSessionId())
		if err != nil {
			return nil, err
		}
		if sess, err = s.DB.Sessions().Get(ctx, id); err != nil {
			return nil, err
		}
		if cfg == nil {
			cfg = &avbv1.SessionConfig{}
			_ = protojson.Unmarshal(sess.Config, cfg)
		}
	}
	cfg = s.withTenantDefaults(ctx, tenantID, orEmpty(cfg))
	callCfg, err := s.callConfig(cfg)
	if err != nil {
		return nil, err
	}
	recognition := s.recognition(&callCfg)
	prov := s.Providers
	if s.Models != nil {
		if prov.LLM, err = s.Models(ctx, callCfg.Model); err != nil {
			if ce := new(connect.Error); errors.As(err, &ce) {
				return nil, err
			}
			return nil, invalidArgument(err.Error())
		}
	}
	raw, err := protojson.Marshal(orEmpty(cfg))
	if err != nil {
		return nil, err
	}
	abandon := func(error) {}
	var history []llm.Message
	resumed := sess != nil && sess.StartedAt != nil
	if resumed {
		// A call held this session before (its instance died or drained,
		// or the client reconnected): the conversation goes on.
		if history, err = s.conversation(ctx, sess.ID); err != nil {
			return nil, err
		}
		callCfg.History = history
	}
	if sess == nil {
		if err := s.admitSession(ctx); err != nil {
			return nil, err
		}
		sess = &store.Session{Config: raw, Status: store.SessionCreated}
		sess.APIKeyID, sess.UserID = sessionOwner(ctx)
		if err := s.DB.Sessions().Create(ctx, sess); err != nil {
			return nil, err
		}
		// A session this call made ends with it when the call cannot
		// start (no session is left waiting for nobody). Should the
		// database itself be what failed, the workflow outbox ends it.
		id := sess.ID
		abandon = func(err error) {
			fctx := tenancy.With(context.WithoutCancel(ctx), tenantID)
			if _, ferr := s.DB.Sessions().Finish(fctx, id, store.SessionError, "the call could not start: "+err.Error(), store.SessionMetrics{}); ferr != nil {
				s.Log.WarnContext(ctx, "abandoned session not ended; the workflow outbox will", "session_id", id.String(), "error", ferr.Error())
			}
		}
	}
	callID := uuid.NewString()
	release, err := s.Limiter.Acquire(ctx, tenantID.String(), sess.ID.String(), s.address()+holderSep+callID)
	if err != nil {
		abandon(err)
		return nil, voiceError(err)
	}
	started, err := s.DB.Sessions().Start(ctx, sess.ID, raw)
	if err != nil {
		release()
		abandon(err)
		return nil, voiceError(err)
	}
	sess = started
	prov.Tools = sessionTools{deps: s.Tools, sessionID: sess.ID.String()}
	// The call outlives the request context of the browser path's RPCs, but
	// not the stream that owns it.
	call, err := voice.New(ctx, callCfg, prov)
	if err != nil {
		release()
		abandon(err)
		return nil, invalidArgument(err.Error())
	}
	l := &liveCall{tenant: tenantID, session: sess, call: call, release: release, started: time.Now(), recognition: recognition,
		expose: s.ExposeInternal, requestID: logging.RequestID(ctx), configure: s.updateConfig, callID: callID,
		resumed: resumed, resumedTurns: userTurns(history)}
	if s.Metrics != nil {
		s.Metrics.ActiveSessions.Inc()
		if resumed {
			s.Metrics.CallsMoved.WithLabelValues("in").Inc()
		}
	}
	if s.Workflows != nil {
		// The call has joined. The report goes out in the background and
		// starts the workflow if CreateSession could not: the call never
		// waits on Temporal.
		l.workflow, l.wf = true, workflowSession(sess, cfg, true)
		s.Workflows.Heartbeat(l.wf)
	}
	return l, nil
}

// sessionOwner is the API key or the user a session is created by.
func sessionOwner(ctx context.Context) (apiKey, user *uuid.UUID) {
	p := authn.PrincipalFrom(ctx)
	switch {
	case p == nil:
	case p.APIKeyID != uuid.Nil:
		return &p.APIKeyID, nil
	case p.UserID != uuid.Nil:
		return nil, &p.UserID
	}
	return nil, nil
}

// workflowSession names a session to the workflow reporter.
func workflowSession(sess *store.Session, cfg *avbv1.SessionConfig, joined bool) workflows.Session {
	return workflows.Session{ID: sess.ID.String(), TenantID: sess.TenantID.String(), IdleTimeout: idleTimeout(cfg),
		Joined: joined, Since: sess.CreatedAt}
}

// withTenantDefaults fills what the session leaves unset (voice, model,
// instructions) from the tenant's voice defaults.
func (s *voiceServer) withTenantDefaults(ctx context.Context, tenantID uuid.UUID, cfg *avbv1.SessionConfig) *avbv1.SessionConfig {
	t, err := s.tenant(ctx, tenantID)
	if err != nil {
		return cfg
	}
	d := settingsFromJSON(t.Settings).GetVoiceDefaults()
	out := proto.CloneOf(cfg)
	if out.Voice == "" {
		out.Voice = d.GetVoice()
	}
	if out.Model == "" {
		out.Model = d.GetModel()
	}
	if out.Instructions == "" {
		out.Instructions = d.GetInstructions()
	}
	return out
}

func orEmpty(c *avbv1.SessionConfig) *avbv1.SessionConfig {
	if c == nil {
		return &avbv1.SessionConfig{}
	}
	return c
}

// pump forwards the call's events to send until the call ends, sending
// heartbeats when quiet, and records transcripts and replies.
func (s *voiceServer) pump(ctx context.Context, l *liveCall, send func(*avbv1.VoiceEvent) error) error {
	started := &avbv1.SessionStarted{Session: sessionToProto(l.session), Resumed: l.resumed, ResumedTurns: int32(l.resumedTurns),
		Recognition: l.recognition}
	if err := send(&avbv1.VoiceEvent{Event: &avbv1.VoiceEvent_SessionStarted{SessionStarted: started}}); err != nil {
		return err
	}
	records := make(chan store.SessionEvent, 64)
	written := make(chan struct{})
	go func() { // session events are written off the media path
		defer close(written)
		for e := range records {
			if err := s.DB.Sessions().AddEvents(context.WithoutCancel(ctx), []store.SessionEvent{e}); err != nil {
				s.Log.WarnContext(ctx, "record session event", "error", err.Error())
			}
		}
	}()
	defer func() { close(records); <-written }()
	record := func(typ string, data map[string]any) {
		st, err := structpb.NewStruct(data)
		if err != nil {
			return
		}
		b, _ := protojson.Marshal(st)
		select {
		case records <- store.SessionEvent{SessionID: l.session.ID, Type: typ, Data: b}:
		default:
			s.Log.WarnContext(ctx, "session event dropped: recorder behind", "type", typ)
		}
	}
	heartbeat := time.NewTicker(heartbeatEvery)
	defer heartbeat.Stop()
	// The workflow's proof that the call lives: three beats per timeout.
	every := 10 * time.Second
	if l.workflow {
		every = min(every, s.Workflows.HeartbeatTimeout/3)
	}
	alive := time.NewTicker(every)
	defer alive.Stop()
	// Only a call whose session a workflow keeps can move: without one,
	// its end here would be the session's end.
	var draining <-chan struct{}
	if l.workflow && !l.pinned {
		draining = s.Draining
	}
	for {
		select {
		case <-draining:
			draining = nil
			l.moving.Store(true)
			if s.Metrics != nil {
				s.Metrics.CallsMoved.WithLabelValues("out").Inc()
			}
			moving := &avbv1.SessionMoving{Reason: apierror.ReasonString(avbv1.ErrorReason_ERROR_REASON_SERVER_SHUTTING_DOWN),
				DeadlineMs: s.MoveDeadline.Milliseconds()}
			if err := send(&avbv1.VoiceEvent{Event: &avbv1.VoiceEvent_SessionMoving{SessionMoving: moving}}); err != nil {
				return err
			}
		case <-alive.C:
			if l.workflow {
				s.Workflows.Heartbeat(l.wf)
			}
		case ev, ok := <-l.call.Events():
			if !ok {
				return nil
			}
			heartbeat.Reset(heartbeatEvery)
			if ev.Type == voice.Error {
				s.Log.WarnContext(ctx, "call error", "session_id", l.session.ID.String(), "error", ev.Err.Error())
			}
			if ev.Type == voice.EndRequested {
				return errAgentEnd // the reply before it was sent
			}
			if ev.Tool != nil {
				if err := send(s.observeTool(l, ev, record)); err != nil {
					return err
				}
				continue
			}
			if ev.Type == voice.ResponseDone {
				if l.workflow {
					s.Workflows.Turn(l.wf, l.turnReport(ev))
				}
				s.observeTurn(ev)
			}
			out := l.observe(ev, record)
			if out == nil {
				continue
			}
			if err := send(out); err != nil {
				return err
			}
		case <-heartbeat.C:
			if err := send(&avbv1.VoiceEvent{Event: &avbv1.VoiceEvent_Heartbeat{Heartbeat: &avbv1.Heartbeat{}}}); err != nil {
				return err
			}
		}
	}
}

// observe updates the session's metrics and records from an engine event,
// and returns the event for the client.
func (l *liveCall) observe(ev voice.Event, record func(string, map[string]any)) *avbv1.VoiceEvent {
	switch ev.Type {
	case voice.SpeechStarted:
		return &avbv1.VoiceEvent{Event: &avbv1.VoiceEvent_SpeechStarted{SpeechStarted: &avbv1.SpeechStarted{AudioMs: ev.AudioMS}}}
	case voice.SpeechStopped:
		return &avbv1.VoiceEvent{Event: &avbv1.VoiceEvent_SpeechStopped{SpeechStopped: &avbv1.SpeechStopped{AudioMs: ev.AudioMS}}}
	case voice.TranscriptPartial:
		return &avbv1.VoiceEvent{Event: &avbv1.VoiceEvent_TranscriptPartial{TranscriptPartial: &avbv1.TranscriptPartial{Text: ev.Text}}}
	case voice.TranscriptFinal:
		l.lastTranscript = ev.Text
		if ev.Text != "" {
			l.mu.Lock()
			l.metrics.Turns++
			l.mu.Unlock()
			record("transcript", map[string]any{"text": ev.Text})
		}
		return &avbv1.VoiceEvent{Event: &avbv1.VoiceEvent_TranscriptFinal{TranscriptFinal: &avbv1.TranscriptFinal{Text: ev.Text}}}
	case voice.ResponseStarted:
		return &avbv1.VoiceEvent{Event: &avbv1.VoiceEvent_ResponseStarted{ResponseStarted: &avbv1.ResponseStarted{ResponseId: int32(ev.ResponseID)}}}
	case voice.TextDelta:
		return &avbv1.VoiceEvent{Event: &avbv1.VoiceEvent_ResponseTextDelta{ResponseTextDelta: &avbv1.ResponseTextDelta{ResponseId: int32(ev.ResponseID), Text: ev.Text}}}
	case voice.AudioDelta:
		return &avbv1.VoiceEvent{Event: &avbv1.VoiceEvent_ResponseAudioDelta{ResponseAudioDelta: &avbv1.ResponseAudioDelta{ResponseId: int32(ev.ResponseID), Audio: ev.Audio, AudioMs: ev.AudioMS}}}
	case voice.ResponseDone:
		m := ev.Metrics
		l.mu.Lock()
		l.metrics.InputTokens += int64(ev.Usage.InputTokens)
		l.metrics.OutputTokens += int64(ev.Usage.OutputTokens)
		l.metrics.OutputAudioSeconds += m.AudioOutMS / 1000
		l.mu.Unlock()
		lat := &avbv1.TurnLatency{VadEndMs: ms(m.VADEnd), SttFinalMs: ms(m.STTFinal), LlmFirstTokenMs: ms(m.LLMFirstToken),
			TtsFirstAudioMs: ms(m.TTSFirstAudio), FirstByteMs: ms(m.FirstByteSent), Preemptive: m.Preemptive, ToolMs: ms(m.Tool)}
		record("response", map[string]any{"text": ev.Text, "interrupted": ev.Interrupted, "played_ms": ev.PlayedMS,
			"first_byte_ms": lat.FirstByteMs, "input_tokens": ev.Usage.InputTokens, "output_tokens": ev.Usage.OutputTokens,
			// The turn's waterfall, from the end of the caller's speech.
			"vad_end_ms": lat.VadEndMs, "stt_final_ms": lat.SttFinalMs, "llm_first_token_ms": lat.LlmFirstTokenMs,
			"tts_first_audio_ms": lat.TtsFirstAudioMs, "tool_ms": lat.ToolMs, "preemptive": lat.Preemptive})
		return &avbv1.VoiceEvent{Event: &avbv1.VoiceEvent_ResponseDone{ResponseDone: &avbv1.ResponseDone{
			ResponseId: int32(ev.ResponseID), Text: ev.Text, Interrupted: ev.Interrupted, PlayedMs: ev.PlayedMS, AudioMs: m.AudioOutMS,
			InputTokens: int64(ev.Usage.InputTokens), OutputTokens: int64(ev.Usage.OutputTokens), Latency: lat}}}
	case voice.ResponseResumed:
		record("resumed", map[string]any{"response_id": ev.ResponseID, "played_ms": ev.PlayedMS})
		return &avbv1.VoiceEvent{Event: &avbv1.VoiceEvent_ResponseResumed{ResponseResumed: &avbv1.ResponseResumed{ResponseId: int32(ev.ResponseID), PlayedMs: ev.PlayedMS}}}
	case voice.Error:
		reason := apierror.ReasonString(avbv1.ErrorReason_ERROR_REASON_PROVIDER_FAILED)
		msg := ev.Err.Error()
		if r := apierror.Reason(voiceError(ev.Err)); r != "" {
			reason = r
		} else if !l.expose {
			// A provider's own error text (its URL, its body, a driver's
			// words) stays in the server log; the client gets what failed.
			msg = providerFailure(ev.Err, l.requestID)
		}
		record("error", map[string]any{"reason": reason, "message": msg})
		return &avbv1.VoiceEvent{Event: &avbv1.VoiceEvent_Error{Error: &avbv1.ErrorEvent{Reason: reason, Message: msg}}}
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// providerFailure says which stage of a turn failed, without the
// provider's own words.
func providerFailure(err error, requestID string) string {
	what := "the reply could not be produced (language model or speech synthesis failed)"
	if strings.HasPrefix(err.Error(), "speech recognition") {
		what = "speech recognition failed"
	}
	return what + "; request id " + requestID
}

// observeTurn records a turn's latency per stage. Interrupted turns are left
// out: their timings say nothing about how fast the agent answers.
func (s *voiceServer) observeTurn(ev voice.Event) {
	if s.Metrics == nil || ev.Interrupted {
		return
	}
	m := ev.Metrics
	for stage, d := range map[string]time.Duration{"vad_end": m.VADEnd, "stt_final": m.STTFinal, "llm_first_token": m.LLMFirstToken,
		"tts_first_audio": m.TTSFirstAudio, "first_byte": m.FirstByteSent, "tool": m.Tool} {
		if d > 0 {
			s.Metrics.TurnLatency.WithLabelValues(stage).Observe(d.Seconds())
		}
	}
}

// turnReport is a finished turn for the session workflow; input audio is
// what arrived since the previous report.
func (l *liveCall) turnReport(ev voice.Event) workflows.Turn {
	l.mu.Lock()
	in := l.inMS - l.reportedInMS
	l.reportedInMS = l.inMS
	l.turns++
	seq := l.turns
	l.mu.Unlock()
	m := ev.Metrics
	return workflows.Turn{Call: l.callID, Seq: seq, Transcript: l.lastTranscript, Reply: ev.Text, InputTokens: int64(ev.Usage.InputTokens), OutputTokens: int64(ev.Usage.OutputTokens),
		InputAudioSec: in / 1000, OutputAudioSec: m.AudioOutMS / 1000, Interrupted: ev.Interrupted,
		FirstByteMS: ms(m.FirstByteSent), LLMFirstTokenMS: ms(m.LLMFirstToken), TTSFirstAudioMS: ms(m.TTSFirstAudio),
		STTFinalMS: ms(m.STTFinal), ToolCalls: m.ToolCalls, ToolMS: ms(m.Tool), At: time.Now()}
}

// audio passes caller audio to the call.
func (l *liveCall) audio(b []byte) error {
	if err := l.call.AppendAudio(b); err != nil {
		return err
	}
	l.mu.Lock()
	l.inMS += l.call.Config().Input.DurationMS(len(b))
	l.mu.Unlock()
	return nil
}

var errEnd = errors.New("session end requested")

// errAgentEnd: the agent ended the call (its end_call tool).
var errAgentEnd = errors.New("the agent ended the call")

// control applies a client control message.
func (l *liveCall) control(c *avbv1.ClientControl) error {
	switch c.GetControl().(type) {
	case *avbv1.ClientControl_Update:
		cfg, err := l.configure(c.GetUpdate())
		if err != nil {
			return err
		}
		if err := l.call.Update(cfg); err != nil {
			return invalidArgument(err.Error())
		}
	case *avbv1.ClientControl_Commit:
		return l.call.Commit()
	case *avbv1.ClientControl_Clear:
		return l.call.Clear()
	case *avbv1.ClientControl_CreateResponse:
		return l.call.CreateResponse()
	case *avbv1.ClientControl_CancelResponse:
		return l.call.CancelResponse()
	case *avbv1.ClientControl_End:
		return errEnd
	case *avbv1.ClientControl_ToolResult:
		r := c.GetToolResult()
		return l.call.ToolResult(r.GetCallId(), r.GetOutput(), r.GetIsError())
	}
	return nil
}

// finish closes the call and records the session's end, once.
func (s *voiceServer) finish(ctx context.Context, l *liveCall, status, reason string) {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return
	}
	l.ended = true
	l.mu.Unlock()
	l.call.Close()
	if !l.workflow {
		l.release()
	}
	if s.Metrics != nil {
		s.Metrics.ActiveSessions.Dec()
		s.Metrics.Sessions.WithLabelValues(status).Inc()
		s.Metrics.SessionDuration.Observe(time.Since(l.started).Seconds())
	}
	if l.workflow {
		l.mu.Lock()
		rest := (l.inMS - l.reportedInMS) / 1000
		l.mu.Unlock()
		// The call keeps its slot until its end reaches the workflow. A call
		// told to move leaves the session to the call that rejoins it.
		s.Workflows.End(l.wf, workflows.End{Status: status, Reason: reason, InputAudioSec: rest, Moved: l.moving.Load()}, l.release)
		return
	}
	l.mu.Lock()
	m := l.metrics
	m.InputAudioSeconds = l.inMS / 1000
	m.DurationSeconds = time.Since(l.started).Seconds()
	l.mu.Unlock()
	if _, err := s.DB.Sessions().Finish(tenancy.With(context.WithoutCancel(ctx), l.tenant), l.session.ID, status, reason, m); err != nil {
		s.Log.ErrorContext(ctx, "record session end", "session_id", l.session.ID.String(), "error", err.Error())
	}
}

// endStatus is the session status for how a stream ended.
func endStatus(err error) (string, string) {
	if err == nil || errors.Is(err, errEnd) || errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) {
		return store.SessionCompleted, ""
	}
	if errors.Is(err, errAgentEnd) {
		return store.SessionCompleted, err.Error()
	}
	return store.SessionError, err.Error()
}

func (s *voiceServer) Converse(ctx context.Context, stream *connect.BidiStream[avbv1.ConverseRequest, avbv1.ConverseResponse]) error {
	begun := time.Now()
	first, err := stream.Receive()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return err
	}
	if first.GetStart() == nil {
		return invalidArgument("the first message must be start")
	}
	l, err := s.open(ctx, first.GetStart())
	if err != nil {
		return err
	}
	return s.converse(ctx, l, begun, stream.Receive, func(ev *avbv1.VoiceEvent) error {
		return stream.Send(&avbv1.ConverseResponse{Event: ev})
	})
}

// converse runs an opened call: the caller's messages from next, the
// call's events to send, until either side ends it. Converse and phone
// calls share it.
func (s *voiceServer) converse(ctx context.Context, l *liveCall, begun time.Time, next func() (*avbv1.ConverseRequest, error), send func(*avbv1.VoiceEvent) error) error {
	// The caller streamed in real time while the session opened: that
	// backlog waits for room rather than counting against the input buffer.
	l.call.AllowBacklog(time.Since(begun))
	s.live.Store(l.session.ID, l)
	defer s.live.Delete(l.session.ID)
	pumped := make(chan error, 1)
	go func() { pumped <- s.pump(ctx, l, send) }()
	received := make(chan error, 1)
	go func() { received <- s.receive(l, next) }()
	var err error
	select {
	case err = <-received:
		if errors.Is(err, voice.ErrClosed) {
			// The caller's audio met a call the platform had closed
			// (terminated, or ended by its workflow): say why.
			if err = l.call.Err(); err == nil {
				err = l.platformEnd()
			}
		}
		status, reason := endStatus(err)
		s.finish(ctx, l, status, reason)
		// The pump delivers what is left; a client that reads nothing
		// cannot hold the stream open (returning cancels its sends).
		select {
		case <-pumped:
		case <-time.After(voice.SlowClientTimeout):
		}
	case err = <-pumped:
		if errors.Is(err, errAgentEnd) {
			status, reason := endStatus(err)
			s.finish(ctx, l, status, reason)
			return nil
		}
		if ctx.Err() != nil && l.call.Err() == nil && !l.endedByPlatform() {
			// The client went away while events were sent: a hang-up.
			s.finish(ctx, l, store.SessionCompleted, "")
			return nil
		}
		// The call ended on the server's side: terminated, or a limit broken.
		if err = l.call.Err(); err == nil {
			err = l.platformEnd()
		}
		s.finish(ctx, l, store.SessionError, err.Error())
	}
	if callErr := l.call.Err(); callErr != nil && (err == nil || errors.Is(err, io.EOF)) {
		err = callErr
	}
	if errors.Is(err, io.EOF) || errors.Is(err, errEnd) {
		return nil
	}
	return voiceError(err)
}

// errTerminated: the session was ended by TerminateSession.
var errTerminated = apierror.New(connect.CodeAborted, avbv1.ErrorReason_ERROR_REASON_SESSION_NOT_LIVE, "the session was terminated")

// endedByPlatform: the platform ended the call (terminated by request, or
// by its workflow).
func (l *liveCall) endedByPlatform() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.endErr != nil
}

// platformEnd is the status of a call the platform ended: why, when known.
func (l *liveCall) platformEnd() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.endErr != nil {
		return l.endErr
	}
	return errTerminated
}

// receive handles client messages until the client stops sending.
func (s *voiceServer) receive(l *liveCall, next func() (*avbv1.ConverseRequest, error)) error {
	for {
		msg, err := next()
		if errors.Is(err, io.ErrUnexpectedEOF) {
			// The client hung up in the middle of a message: it left,
			// as with a clean close; nothing is wrong on this side.
			return io.EOF
		}
		if err != nil {
			return err
		}
		switch m := msg.GetMessage().(type) {
		case *avbv1.ConverseRequest_Audio:
			if err := l.audio(m.Audio.GetAudio()); err != nil {
				if errors.Is(err, voice.ErrInputOverflow) || errors.Is(err, voice.ErrFrameTooLarge) || errors.Is(err, voice.ErrClosed) {
					return err
				}
				return invalidAudio(err)
			}
		case *avbv1.ConverseRequest_Control:
			// A result for a call no longer open is told as an error
			// event; the call goes on.
			if err := l.control(m.Control); err != nil && !errors.Is(err, voice.ErrToolCallNotOpen) {
				return err
			}
		case *avbv1.ConverseRequest_Start:
			return invalidArgument("start may only be the first message")
		}
	}
}

func invalidAudio(err error) error {
	return apierror.New(connect.CodeInvalidArgument, avbv1.ErrorReason_ERROR_REASON_INVALID_AUDIO, "audio does not match the input format: "+err.Error())
}

func (s *voiceServer) ConverseEvents(ctx context.Context, req *connect.Request[avbv1.ConverseEventsRequest], stream *connect.ServerStream[avbv1.ConverseEventsResponse]) error {
	l, err := s.open(ctx, req.Msg.GetStart())
	if err != nil {
		return err
	}
	s.live.Store(l.session.ID, l)
	defer s.live.Delete(l.session.ID)
	err = s.pump(ctx, l, func(ev *avbv1.VoiceEvent) error { return stream.Send(&avbv1.ConverseEventsResponse{Event: ev}) })
	if err == nil {
		err = l.call.Err()
	}
	if l.mu.Lock(); err == nil {
		err = l.endErr // ended by the platform: say why
	}
	l.mu.Unlock()
	status, reason := endStatus(err)
	s.finish(ctx, l, status, reason)
	if errors.Is(err, errAgentEnd) {
		return nil
	}
	return voiceError(err)
}

// lookup finds a live browser-path session of the caller's tenant.
func (s *voiceServer) lookup(ctx context.Context, rawID string) (*liveCall, error) {
	if err := mayUseSession(ctx, rawID); err != nil {
		return nil, err
	}
	id, err := parseID(rawID)
	if err != nil {
		return nil, err
	}
	v, ok := s.live.Load(id)
	tenantID, _ := tenancy.ID(ctx)
	if !ok || v.(*liveCall).tenant != tenantID {
		return nil, errNotHere
	}
	return v.(*liveCall), nil
}

func (s *voiceServer) SendAudio(ctx context.Context, req *connect.Request[avbv1.SendAudioRequest]) (*connect.Response[avbv1.SendAudioResponse], error) {
	l, err := s.lookup(ctx, req.Msg.GetSessionId())
	if errors.Is(err, errNotHere) {
		return forward(ctx, s, req, req.Msg.GetSessionId(), func(c avbv1connect.VoiceServiceClient) func(context.Context, *connect.Request[avbv1.SendAudioRequest]) (*connect.Response[avbv1.SendAudioResponse], error) {
			return c.SendAudio
		})
	}
	if err != nil {
		return nil, err
	}
	if err := l.audio(req.Msg.GetAudio()); err != nil {
		if errors.Is(err, voice.ErrInputOverflow) || errors.Is(err, voice.ErrFrameTooLarge) || errors.Is(err, voice.ErrClosed) {
			return nil, voiceError(err)
		}
		return nil, invalidAudio(err)
	}
	return connect.NewResponse(&avbv1.SendAudioResponse{}), nil
}

func (s *voiceServer) SendControl(ctx context.Context, req *connect.Request[avbv1.SendControlRequest]) (*connect.Response[avbv1.SendControlResponse], error) {
	l, err := s.lookup(ctx, req.Msg.GetSessionId())
	if errors.Is(err, errNotHere) {
		return forward(ctx, s, req, req.Msg.GetSessionId(), func(c avbv1connect.VoiceServiceClient) func(context.Context, *connect.Request[avbv1.SendControlRequest]) (*connect.Response[avbv1.SendControlResponse], error) {
			return c.SendControl
		})
	}
	if err != nil {
		return nil, err
	}
	if err := l.control(req.Msg.GetControl()); err != nil {
		if !errors.Is(err, errEnd) {
			return nil, voiceError(err)
		}
		s.finish(ctx, l, store.SessionCompleted, "")
	}
	return connect.NewResponse(&avbv1.SendControlResponse{}), nil
}

// Client token lifetimes.
const (
	defaultClientTokenTTL = 5 * time.Minute
	minClientTokenTTL     = 30 * time.Second
)

func (s *voiceServer) CreateClientToken(ctx context.Context, req *connect.Request[avbv1.CreateClientTokenRequest]) (*connect.Response[avbv1.CreateClientTokenResponse], error) {
	p := authn.PrincipalFrom(ctx)
	tenantID, err := callerTenant(ctx)
	if err != nil {
		return nil, err
	}
	ttl := defaultClientTokenTTL
	if n := req.Msg.GetTtlSeconds(); n > 0 {
		ttl = max(time.Duration(n)*time.Second, minClientTokenTTL)
	}
	exp := time.Now().Add(ttl)
	cl := authn.ClientClaims{Tenant: tenantID, Expiry: exp.Unix()}
	switch {
	case p.Kind == authn.KindAPIKey:
		cl.APIKey = &p.APIKeyID
	case p.Kind == authn.KindUser && p.UserID != uuid.Nil:
		cl.User = &p.UserID
	default:
		return nil, apierror.New(connect.CodePermissionDenied, avbv1.ErrorReason_ERROR_REASON_PERMISSION_DENIED,
			"client tokens are minted with an API key or by a user of the tenant")
	}
	if req.Msg.GetSessionId() != "" {
		id, err := parseID(req.Msg.GetSessionId())
		if err != nil {
			return nil, err
		}
		if _, err := s.DB.Sessions().Get(ctx, id); err != nil {
			return nil, err
		}
		cl.Session = &id
	}
	tok, err := s.ClientTokens.Mint(cl)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.CreateClientTokenResponse{Token: tok, ExpireTime: timestamppb.New(exp)}), nil
}
