package telephony

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Outbound is a call avb places through a trunk.
type Outbound struct {
	// To is an E.164 number (sent to Via) or a sip: URI.
	To string
	// Via is the trunk's address (host:port) numbers are sent to.
	Via string
	// From is the caller id presented ("" for avb's).
	From string
	// Ring bounds the ringing (0: 30 s).
	Ring time.Duration
}

// The states a placed call reports, as its progress.
const (
	Ringing  = "ringing"
	Answered = "answered"
	Busy     = "busy"
	NoAnswer = "no_answer"
	Failed   = "failed"
)

// DefaultRing is how long a placed call rings when the caller gives no bound.
const DefaultRing = 30 * time.Second

// Dial places o and, once answered, runs conv on it until the call ends.
// progress hears each state (ringing, then answered, or the end: busy,
// no_answer or failed with the SIP status). It returns when the call is
// over.
func (s *Server) Dial(ctx context.Context, o Outbound, conv Conversation, progress func(state string, status int)) error {
	fail := func(state string, status int, err error) error {
		progress(state, status)
		conv.Fail("the call was not answered: " + state)
		s.outcomeOut(state)
		return err
	}
	if s.client == nil {
		return fail(Failed, 0, ErrUnavailable)
	}
	to, err := dialTarget(o)
	if err != nil {
		return fail(Failed, 0, err)
	}
	conn, err := ListenRTP(s.host, s.cfg.RTPPorts)
	if err != nil {
		return fail(Failed, 0, err)
	}
	local := netip.MustParseAddrPort(conn.LocalAddr().String())
	// The session speaks mu-law: avb offers PCMU (every G.711 trunk does).
	offer := Describe(netip.AddrPortFrom(s.host, local.Port()), rand.Uint64()>>1, &Media{Codec: PCMU, DTMF: dtmfPayloadType})
	req := sip.NewRequest(sip.INVITE, to)
	req.SetBody(offer)
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	if o.From != "" {
		from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: o.From, Host: s.host.String(), Port: s.port}, Params: sip.NewParams()}
		from.Params.Add("tag", sip.GenerateTagN(16))
		req.AppendHeader(from)
	}
	ring := o.Ring
	if ring <= 0 {
		ring = DefaultRing
	}
	rctx, cancel := context.WithTimeout(ctx, ring)
	defer cancel()
	d, err := s.placed.WriteInvite(rctx, req)
	if err != nil {
		_ = conn.Close()
		return fail(Failed, 0, err)
	}
	rang := false
	answered := make(chan error, 1)
	go func() {
		answered <- d.WaitAnswer(rctx, sipgo.AnswerOptions{OnResponse: func(r *sip.Response) error {
			if (r.StatusCode == sip.StatusRinging || r.StatusCode == sip.StatusSessionInProgress) && !rang {
				rang = true
				progress(Ringing, r.StatusCode)
			}
			return nil
		}})
	}()
	select {
	case err = <-answered:
	case <-rctx.Done():
		// Past the ring bound. sipgo cancels the INVITE in the background
		// (a CANCEL waits for a provisional answer, up to SIP's timer B):
		// the call is over here whatever it does.
		select {
		case err = <-answered:
		case <-time.After(time.Second):
			err = rctx.Err()
		}
	}
	if err != nil {
		_ = conn.Close()
		_ = d.Close()
		var refused *sipgo.ErrDialogResponse
		switch {
		case errors.As(err, &refused) && (refused.Res.StatusCode == sip.StatusBusyHere || refused.Res.StatusCode == 600):
			return fail(Busy, refused.Res.StatusCode, err)
		case errors.As(err, &refused) && (refused.Res.StatusCode == sip.StatusRequestTimeout || refused.Res.StatusCode == sip.StatusTemporarilyUnavailable):
			return fail(NoAnswer, refused.Res.StatusCode, err)
		case errors.As(err, &refused):
			return fail(Failed, refused.Res.StatusCode, err)
		case rctx.Err() != nil:
			return fail(NoAnswer, 0, err)
		}
		return fail(Failed, 0, err)
	}
	if err := d.Ack(ctx); err != nil {
		_ = conn.Close()
		return fail(Failed, 0, err)
	}
	peer, err := ParseOffer(d.InviteResponse.Body())
	if err != nil || peer.Codec != PCMU {
		_ = conn.Close()
		bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = d.Bye(bctx)
		bcancel()
		return fail(Failed, 0, fmt.Errorf("the answer's media: %v (%s)", err, peer.Codec.Name))
	}
	progress(Answered, d.InviteResponse.StatusCode)
	s.outcomeOut(Answered)
	callCtx, end := context.WithCancel(context.Background())
	defer end()
	media := NewSession(callCtx, conn, peer)
	go func() {
		select {
		case <-d.Context().Done(): // the far end hung up
		case <-media.Done():
		case <-callCtx.Done():
		}
		media.Close()
	}()
	err = conv.Run(callCtx, callLeg{Session: media, dialog: d, contact: to})
	media.Close()
	if d.LoadState() < sip.DialogStateEnded {
		bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = d.Bye(bctx)
		bcancel()
	}
	_ = d.Close()
	return err
}

func (s *Server) outcomeOut(o string) {
	if s.Outcome != nil {
		s.Outcome("outbound", o)
	}
}

// dialTarget is the request URI of o: a sip: URI as given, a number at
// the trunk's address.
func dialTarget(o Outbound) (sip.Uri, error) {
	var u sip.Uri
	if strings.HasPrefix(o.To, "sip:") || strings.HasPrefix(o.To, "sips:") {
		if err := sip.ParseUri(o.To, &u); err != nil {
			return u, fmt.Errorf("telephony: %q is not a SIP URI: %w", o.To, err)
		}
		return u, nil
	}
	via, err := netip.ParseAddrPort(o.Via)
	if err != nil {
		return u, fmt.Errorf("telephony: the trunk's outbound address %q is not ip:port: %w", o.Via, err)
	}
	return sip.Uri{Scheme: "sip", User: o.To, Host: via.Addr().String(), Port: int(via.Port())}, nil
}
