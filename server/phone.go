package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/agentvoicebox/avb/apierror"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/telephony"
	"github.com/agentvoicebox/avb/tenancy"
)

// PhoneEngine takes the SIP endpoint's calls into voice sessions, on the
// VoiceService handler h: a phone call is a session like any other (its
// workflow, usage, events, TerminateSession), whose caller is a phone.
func PhoneEngine(h avbv1connect.VoiceServiceHandler) telephony.Engine {
	return phoneEngine{h.(*voiceServer)}
}

type phoneEngine struct{ s *voiceServer }

// phoneFormat is the session's audio in the call's codec: the engine
// speaks G.711 itself, so the media path only frames it.
func phoneFormat(c telephony.Codec) *avbv1.AudioFormat {
	enc := avbv1.AudioEncoding_AUDIO_ENCODING_MULAW
	if c.Name == telephony.PCMA.Name {
		enc = avbv1.AudioEncoding_AUDIO_ENCODING_ALAW
	}
	return &avbv1.AudioFormat{Encoding: enc, SampleRate: 8000}
}

func (e phoneEngine) Open(ctx context.Context, c telephony.Call) (telephony.Conversation, error) {
	return e.open(ctx, c, "inbound")
}

func (e phoneEngine) open(ctx context.Context, c telephony.Call, direction string) (*phoneCall, error) {
	begun := time.Now()
	ctx = tenancy.With(ctx, c.Route.TenantID)
	format := phoneFormat(c.Codec)
	sess, err := createSession(ctx, e.s.Voice, &avbv1.CreateSessionRequest{
		ProjectId: c.Route.ProjectID, PersonaId: c.Route.PersonaID, VoiceConfigId: c.Route.VoiceConfigID,
		Config: &avbv1.SessionConfig{InputAudioFormat: format, OutputAudioFormat: format},
	})
	if err != nil {
		return nil, phoneRefusal(err)
	}
	l, err := e.s.open(ctx, &avbv1.SessionStart{SessionId: sess.ID.String()})
	if err != nil {
		return nil, phoneRefusal(err)
	}
	l.pinned = true
	info, _ := json.Marshal(map[string]any{"direction": direction, "from": c.From, "to": c.Route.Number, "trunk": c.Trunk,
		"codec": c.Codec.Name, "sip_call_id": c.CallID})
	if err := e.s.DB.Sessions().AddEvents(ctx, []store.SessionEvent{{SessionID: sess.ID, Type: "phone.call", Data: info}}); err != nil {
		e.s.Log.WarnContext(ctx, "phone call event not recorded", "error", err.Error())
	}
	return &phoneCall{s: e.s, l: l, ctx: ctx, begun: begun}, nil
}

// phoneRefusal is what the SIP side answers a call the platform cannot
// take: busy at the tenant's call cap, unavailable otherwise.
func phoneRefusal(err error) error {
	switch apierror.Reason(err) {
	case apierror.ReasonString(avbv1.ErrorReason_ERROR_REASON_CALL_LIMIT_EXCEEDED):
		return fmt.Errorf("%w: %w", telephony.ErrBusy, err)
	}
	return fmt.Errorf("%w: %w", telephony.ErrUnavailable, err)
}

type phoneCall struct {
	s     *voiceServer
	l     *liveCall
	ctx   context.Context // the tenant's
	begun time.Time
}

func (p *phoneCall) SessionID() string { return p.l.session.ID.String() }

// Fail ends a call that never got its media (a placed call not answered,
// no media port).
func (p *phoneCall) Fail(reason string) {
	p.s.finish(p.ctx, p.l, store.SessionError, reason)
}

// dtmfText is how a key the caller pressed reaches the model.
func dtmfText(d rune) string { return fmt.Sprintf("The caller pressed %c on the keypad.", d) }

func (p *phoneCall) Run(ctx context.Context, leg telephony.Leg) error {
	ctx = tenancy.With(ctx, p.l.tenant)
	transferred := make(chan struct{})
	var transferring atomic.Bool
	next := func() (*avbv1.ConverseRequest, error) {
		for {
			select {
			case <-transferred:
				return nil, io.EOF // the caller went to the transfer's target
			case f, ok := <-leg.Frames():
				if !ok {
					return nil, io.EOF
				}
				return &avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Audio{Audio: &avbv1.AudioAppend{Audio: f}}}, nil
			case d := <-leg.Digits():
				p.digit(ctx, d)
			case <-leg.Done():
				return nil, io.EOF
			case <-ctx.Done():
				return nil, io.EOF
			}
		}
	}
	send := func(ev *avbv1.VoiceEvent) error {
		switch e := ev.GetEvent().(type) {
		case *avbv1.VoiceEvent_ResponseAudioDelta:
			leg.Play(e.ResponseAudioDelta.GetAudio())
		case *avbv1.VoiceEvent_SpeechStarted:
			leg.Flush() // barge-in: what is not sent yet is not said
		case *avbv1.VoiceEvent_Transfer:
			if transferring.CompareAndSwap(false, true) {
				go p.transfer(ctx, leg, e.Transfer.GetTarget(), transferred, &transferring)
			}
		}
		return nil
	}
	answered := time.Now()
	err := p.s.converse(ctx, p.l, p.begun, next, send)
	p.quality(ctx, leg.Stats())
	// Phone minutes are their own usage: answered to hung up, once.
	usage := []store.UsageEntry{{SessionID: p.l.session.ID, Kind: "phone_seconds", Quantity: time.Since(answered).Seconds()}}
	if err := p.s.DB.Sessions().RecordUsage(context.WithoutCancel(ctx), usage); err != nil {
		p.s.Log.WarnContext(ctx, "phone minutes not recorded", "session_id", p.SessionID(), "error", err.Error())
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// transferSettle is how long the agent's audio must have been quiet (all
// sent) before the caller is handed over; transferWait bounds the wait.
const (
	transferSettle = 600 * time.Millisecond
	transferWait   = 15 * time.Second
)

// transfer lets the agent finish what it says ("Transferring you now."),
// then asks the far end to take the caller to target (a SIP REFER). Once
// it accepts, the call ends here; if it refuses, the call goes on.
func (p *phoneCall) transfer(ctx context.Context, leg telephony.Leg, target string, done chan<- struct{}, busy *atomic.Bool) {
	quietSince := time.Now()
	for deadline := time.Now().Add(transferWait); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if leg.Queued() > 0 {
			quietSince = time.Now()
		} else if time.Since(quietSince) >= transferSettle {
			break
		}
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := leg.Transfer(rctx, target)
	cancel()
	typ, data := "phone.transferred", map[string]any{"target": target}
	if err != nil {
		typ, data["error"] = "phone.transfer_failed", err.Error()
	}
	b, _ := json.Marshal(data)
	if rerr := p.s.DB.Sessions().AddEvents(context.WithoutCancel(ctx), []store.SessionEvent{{SessionID: p.l.session.ID, Type: typ, Data: b}}); rerr != nil {
		p.s.Log.WarnContext(ctx, "transfer not recorded", "error", rerr.Error())
	}
	if err != nil {
		busy.Store(false) // the agent may try again
		return
	}
	close(done)
}

// digit records a key the caller pressed and gives it to the model.
func (p *phoneCall) digit(ctx context.Context, d rune) {
	data, _ := json.Marshal(map[string]any{"digit": string(d)})
	if err := p.s.DB.Sessions().AddEvents(ctx, []store.SessionEvent{{SessionID: p.l.session.ID, Type: "dtmf", Data: data}}); err != nil {
		p.s.Log.WarnContext(ctx, "dtmf event not recorded", "error", err.Error())
	}
	_ = p.l.call.Input(dtmfText(d))
}

// quality records the call's media quality: a session event, and the
// histograms across calls.
func (p *phoneCall) quality(ctx context.Context, st telephony.Stats) {
	data, _ := json.Marshal(map[string]any{"packets_received": st.Received, "packets_lost": st.Lost, "packets_late": st.Late,
		"frames_concealed": st.Concealed, "jitter_ms": st.JitterMS, "jitter_buffer_delay_ms": st.DelayMS})
	if err := p.s.DB.Sessions().AddEvents(context.WithoutCancel(ctx), []store.SessionEvent{{SessionID: p.l.session.ID, Type: "phone.quality", Data: data}}); err != nil {
		p.s.Log.WarnContext(ctx, "phone quality not recorded", "error", err.Error())
	}
	if m := p.s.Metrics; m != nil && m.PhoneJitter != nil {
		m.PhoneJitter.Observe(st.JitterMS / 1000)
		m.PhoneBufferDelay.Observe(st.DelayMS / 1000)
		if st.Received > 0 {
			m.PhoneLoss.Observe(float64(st.Lost) / float64(st.Received+st.Lost))
			m.PhoneLate.Observe(float64(st.Late) / float64(st.Received))
		}
	}
}

// Dialer places calls (the SIP endpoint).
type Dialer interface {
	Dial(ctx context.Context, o telephony.Outbound, conv telephony.Conversation, progress func(state string, status int)) error
}

// NewCallServer returns the CallService handler: calls placed through the
// tenant's trunks by dial (nil: this server has no SIP endpoint), as
// sessions on the VoiceService handler voice.
func NewCallServer(deps Identity, voice avbv1connect.VoiceServiceHandler, dial func() Dialer) avbv1connect.CallServiceHandler {
	return &callServer{Identity: deps, engine: phoneEngine{voice.(*voiceServer)}, dial: dial}
}

type callServer struct {
	Identity
	engine phoneEngine
	dial   func() Dialer
}

// maxRing bounds a placed call's ringing; the call itself then runs until
// a side hangs up.
const maxRing = 120 * time.Second

func (c *callServer) Dial(ctx context.Context, req *connect.Request[avbv1.DialRequest]) (*connect.Response[avbv1.DialResponse], error) {
	var dialer Dialer
	if c.dial != nil {
		dialer = c.dial()
	}
	if dialer == nil {
		return nil, apierror.New(connect.CodeFailedPrecondition, avbv1.ErrorReason_ERROR_REASON_DEPENDENCY_UNAVAILABLE,
			"phone calls are off: this server has no SIP endpoint (AVB_SIP_ADDR)")
	}
	tenantID, err := callerTenant(ctx)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	row, err := c.DB.Resources(store.SipTrunks).Get(ctx, *parseOptionalID(m.GetSipTrunkId()))
	if errors.Is(err, store.ErrNotFound) {
		return nil, apierror.Field("sip_trunk_id", "no such trunk")
	}
	if err != nil {
		return nil, err
	}
	var trunk avbv1.SipTrunk
	_ = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(orEmptyJSON(row.Spec), &trunk)
	isURI := strings.HasPrefix(m.GetTo(), "sip:") || strings.HasPrefix(m.GetTo(), "sips:")
	if trunk.GetOutboundAddress() == "" && !isURI {
		return nil, apierror.Field("sip_trunk_id", "the trunk has no outbound_address: it takes no calls from avb")
	}
	// The call outlives this request: it runs on the request's values
	// (tenant, caller) without its end.
	callCtx := context.WithoutCancel(ctx)
	route := &telephony.Route{TenantID: tenantID, Number: m.GetTo(), ProjectID: m.GetProjectId(), PersonaID: m.GetPersonaId(), VoiceConfigID: m.GetVoiceConfigId()}
	conv, err := c.engine.open(callCtx, telephony.Call{Route: route, From: m.GetFrom(), Trunk: row.Name, Codec: telephony.PCMU}, "outbound")
	if err != nil {
		// The API's own refusal (a bad project, the call or session
		// limits) as it is.
		if ce := new(connect.Error); errors.As(err, &ce) {
			return nil, ce
		}
		return nil, err
	}
	sessionID := conv.l.session.ID
	progress := func(state string, status int) {
		data, _ := json.Marshal(map[string]any{"sip_status": status})
		if err := c.DB.Sessions().AddEvents(callCtx, []store.SessionEvent{{SessionID: sessionID, Type: "phone." + state, Data: data}}); err != nil {
			c.Log.WarnContext(callCtx, "call progress not recorded", "state", state, "error", err.Error())
		}
	}
	ring := time.Duration(m.GetRingTimeoutSeconds()) * time.Second
	go func() {
		err := dialer.Dial(callCtx, telephony.Outbound{To: m.GetTo(), Via: trunk.GetOutboundAddress(), From: m.GetFrom(), Ring: min(ring, maxRing)}, conv, progress)
		if err != nil {
			c.Log.InfoContext(callCtx, "placed call ended", "session_id", sessionID.String(), "reason", err.Error())
		}
	}()
	return connect.NewResponse(&avbv1.DialResponse{Session: sessionToProto(conv.l.session)}), nil
}
