package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

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
	info, _ := json.Marshal(map[string]any{"direction": "inbound", "from": c.From, "to": c.Route.Number, "trunk": c.Trunk,
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
		return fmt.Errorf("%w: %v", telephony.ErrBusy, err)
	}
	return fmt.Errorf("%w: %v", telephony.ErrUnavailable, err)
}

type phoneCall struct {
	s     *voiceServer
	l     *liveCall
	ctx   context.Context // the tenant's
	begun time.Time
}

func (p *phoneCall) SessionID() string { return p.l.session.ID.String() }

// dtmfText is how a key the caller pressed reaches the model.
func dtmfText(d rune) string { return fmt.Sprintf("The caller pressed %c on the keypad.", d) }

func (p *phoneCall) Run(ctx context.Context, leg telephony.Leg) error {
	ctx = tenancy.With(ctx, p.l.tenant)
	next := func() (*avbv1.ConverseRequest, error) {
		for {
			select {
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
		}
		return nil
	}
	err := p.s.converse(ctx, p.l, p.begun, next, send)
	p.quality(ctx, leg.Stats())
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
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
