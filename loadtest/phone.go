package loadtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"

	"github.com/agentvoicebox/avb/telephony"
	"github.com/agentvoicebox/avb/voice/audio"
)

// Phone mode: each call is a phone call to Config.Number through avb's SIP
// endpoint, with G.711 over RTP, as a trunk would send it.
const Phone Mode = "phone"

// Softphone is a SIP user agent with one call's RTP: what a carrier's trunk
// or a desk phone does, enough to call avb (and be called by it).
type Softphone struct {
	avb     netip.AddrPort
	ua      *sipgo.UserAgent
	dialogs *sipgo.DialogClientCache
	client  *sipgo.Client
	sig     net.PacketConn
	rtp     *net.UDPConn
	byes    chan struct{}
	// Answering calls avb places: answer is the status the phone gives
	// (200 answers, after ringing), rings tells each INVITE.
	answer atomic.Int32
	rings  chan *sip.Request
	refers chan string
	// referWith is how the phone answers a REFER (202 by default; 0: never).
	referWith atomic.Int32
	packets   atomic.Int64
	// Offer, when set, is the SDP the phone offers instead of its own.
	Offer  []byte // the Refer-To of each transfer avb asked for
	server *sipgo.DialogServerCache

	mu    sync.Mutex
	heard []byte    // what avb sent since the first speech after Reset, in PCMU
	voice time.Time // when speech (not silence) first came after Reset
	last  time.Time // when the last speech came

	out struct {
		sync.Mutex
		to  netip.AddrPort
		seq uint16
		ts  uint32
	}
}

// NewSoftphone listens for signalling and media on loopback (or host) and
// calls avb's SIP endpoint at avb.
func NewSoftphone(avb netip.AddrPort) (*Softphone, error) {
	host := "127.0.0.1"
	if !avb.Addr().IsLoopback() {
		host = outbound(avb)
	}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("avb-softphone"), sipgo.WithUserAgentHostname(host))
	if err != nil {
		return nil, err
	}
	sig, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		_ = ua.Close()
		return nil, err
	}
	port := sig.LocalAddr().(*net.UDPAddr).Port
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		return nil, err
	}
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname(host), sipgo.WithClientPort(port))
	if err != nil {
		return nil, err
	}
	ph := &Softphone{avb: avb, ua: ua, sig: sig, client: cli, byes: make(chan struct{}, 4), rings: make(chan *sip.Request, 4), refers: make(chan string, 4)}
	contact := sip.ContactHeader{Address: sip.Uri{User: "caller", Host: host, Port: port}}
	ph.dialogs = sipgo.NewDialogClientCache(cli, contact)
	ph.server = sipgo.NewDialogServerCache(cli, contact)
	ph.answer.Store(sip.StatusOK)
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if ph.dialogs.ReadBye(req, tx) == nil || ph.server.ReadBye(req, tx) == nil {
			ph.byes <- struct{}{}
		}
	})
	srv.OnInvite(ph.onInvite)
	ph.referWith.Store(sip.StatusAccepted)
	srv.OnRefer(func(req *sip.Request, tx sip.ServerTransaction) {
		code := int(ph.referWith.Load())
		if code == 0 {
			return // a far end that never answers
		}
		_ = tx.Respond(sip.NewResponseFromRequest(req, code, "Refer", nil))
		if h := req.GetHeader("Refer-To"); h != nil {
			select {
			case ph.refers <- h.Value():
			default:
			}
		}
	})
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	go func() { _ = srv.ServeUDP(sig) }()
	if ph.rtp, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(host)}); err != nil {
		ph.Close()
		return nil, err
	}
	go ph.listen()
	return ph, nil
}

func outbound(to netip.AddrPort) string {
	c, err := net.Dial("udp", to.String())
	if err != nil {
		return "127.0.0.1"
	}
	defer c.Close()
	h, _, _ := net.SplitHostPort(c.LocalAddr().String())
	return h
}

// Addr is where the phone takes calls (its SIP address).
func (ph *Softphone) Addr() netip.AddrPort {
	return netip.MustParseAddrPort(ph.sig.LocalAddr().String())
}

// AnswerWith sets how the phone answers the calls it gets: 200 (the
// default) answers after a ring, 486 is busy, and so on.
func (ph *Softphone) AnswerWith(status int) { ph.answer.Store(int32(status)) }

// ReferWith sets how the phone answers transfers: 202 accepts (the
// default), 603 declines, 0 never answers.
func (ph *Softphone) ReferWith(status int) { ph.referWith.Store(int32(status)) }

// Refers tells where avb asked the phone to transfer the caller (each
// REFER's Refer-To, answered as ReferWith says).
func (ph *Softphone) Refers() <-chan string { return ph.refers }

// Rings tells each call the phone gets (its INVITE).
func (ph *Softphone) Rings() <-chan *sip.Request { return ph.rings }

// onInvite takes a call avb places: it rings, then answers with its media
// (or refuses as AnswerWith says).
func (ph *Softphone) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	select {
	case ph.rings <- req:
	default:
	}
	d, err := ph.server.ReadInvite(req, tx)
	if err != nil {
		return
	}
	_ = d.Respond(sip.StatusRinging, "Ringing", nil)
	time.Sleep(100 * time.Millisecond)
	if code := int(ph.answer.Load()); code != sip.StatusOK {
		_ = d.Respond(code, "Refused", nil)
		return
	}
	peer, err := telephony.ParseOffer(req.Body())
	if err != nil {
		_ = d.Respond(sip.StatusNotAcceptableHere, "Not Acceptable Here", nil)
		return
	}
	ph.out.Lock()
	ph.out.to = peer.Addr
	ph.out.Unlock()
	_ = d.RespondSDP(telephony.Describe(netip.MustParseAddrPort(ph.rtp.LocalAddr().String()), 43, &peer))
}

// Close ends the phone's sockets.
func (ph *Softphone) Close() {
	if ph.rtp != nil {
		_ = ph.rtp.Close()
	}
	_ = ph.sig.Close()
	_ = ph.ua.Close()
}

// Byes tells each BYE avb sent (avb hung up).
func (ph *Softphone) Byes() <-chan struct{} { return ph.byes }

// listen keeps what avb sends, noting when speech (not silence) comes.
func (ph *Softphone) listen() {
	buf := make([]byte, 1500)
	for {
		n, err := ph.rtp.Read(buf)
		if err != nil {
			return
		}
		var p rtp.Packet
		if p.Unmarshal(buf[:n]) != nil {
			continue
		}
		ph.packets.Add(1)
		speech := false
		for _, b := range p.Payload {
			if b != 0xFF && b != 0x7F { // mu-law silence
				speech = true
				break
			}
		}
		now := time.Now()
		ph.mu.Lock()
		if speech {
			if ph.voice.IsZero() {
				ph.voice = now
			}
			ph.last = now
		}
		if !ph.voice.IsZero() {
			ph.heard = append(ph.heard, p.Payload...)
		}
		ph.mu.Unlock()
	}
}

// Reset forgets what was heard.
func (ph *Softphone) Reset() {
	ph.mu.Lock()
	ph.heard, ph.voice, ph.last = nil, time.Time{}, time.Time{}
	ph.mu.Unlock()
}

// Reply waits for the agent's reply: speech followed by quiet of silence.
// It returns the reply (PCMU) and when its first speech packet came.
func (ph *Softphone) Reply(ctx context.Context, quiet time.Duration) ([]byte, time.Time, error) {
	for {
		ph.mu.Lock()
		done := !ph.voice.IsZero() && time.Since(ph.last) >= quiet
		heard, first := append([]byte(nil), ph.heard...), ph.voice
		ph.mu.Unlock()
		if done {
			return heard, first, nil
		}
		select {
		case <-ctx.Done():
			return nil, time.Time{}, fmt.Errorf("no reply heard (%d bytes): %w", len(heard), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// FirstSpeech is when speech first came after Reset (zero: none yet).
func (ph *Softphone) FirstSpeech() time.Time {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	return ph.voice
}

// Dialog is a call the phone placed.
type Dialog = sipgo.DialogClientSession

// Call dials number at avb with a trunk's credentials ("" for none) and
// waits for the answer; a refusal is a *sipgo.ErrDialogResponse (see
// SIPStatus).
func (ph *Softphone) Call(ctx context.Context, number, user, password string) (*Dialog, error) {
	local := netip.MustParseAddrPort(ph.rtp.LocalAddr().String())
	offer := telephony.Describe(local, 42, nil)
	if ph.Offer != nil {
		offer = ph.Offer
	}
	to := sip.Uri{Scheme: "sip", User: number, Host: ph.avb.Addr().String(), Port: int(ph.avb.Port())}
	d, err := ph.dialogs.Invite(ctx, to, offer, sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		return nil, err
	}
	if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{Username: user, Password: password}); err != nil {
		return nil, err
	}
	if err := d.Ack(ctx); err != nil {
		return nil, err
	}
	m, err := telephony.ParseOffer(d.InviteResponse.Body())
	if err != nil {
		return nil, err
	}
	ph.out.Lock()
	ph.out.to = m.Addr
	ph.out.Unlock()
	return d, nil
}

// Options asks avb's endpoint what it supports (a trunk's keepalive).
func (ph *Softphone) Options(ctx context.Context) (*sip.Response, error) {
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: ph.avb.Addr().String(), Port: int(ph.avb.Port())})
	return ph.client.Do(ctx, req)
}

// Hold puts the call on hold (a re-INVITE offering sendonly) or takes it
// off (sendrecv); it returns avb's answer's status.
func (ph *Softphone) Hold(ctx context.Context, d *Dialog, hold bool) (int, error) {
	local := netip.MustParseAddrPort(ph.rtp.LocalAddr().String())
	offer := string(telephony.Describe(local, 42, nil))
	if hold {
		offer = strings.Replace(offer, "a=sendrecv", "a=sendonly", 1)
	}
	target := d.InviteRequest.Recipient
	if c := d.InviteResponse.Contact(); c != nil {
		target = c.Address
	}
	req := sip.NewRequest(sip.INVITE, target)
	req.SetBody([]byte(offer))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res, err := d.Do(ctx, req)
	if err != nil {
		return 0, err
	}
	return res.StatusCode, nil
}

// Packets is how many RTP packets avb has sent the phone.
func (ph *Softphone) Packets() int64 { return ph.packets.Load() }

// SIPStatus is the SIP status that refused a call (0: not refused).
func SIPStatus(err error) int {
	var e *sipgo.ErrDialogResponse
	if errors.As(err, &e) {
		return e.Res.StatusCode
	}
	return 0
}

func (ph *Softphone) send(pt uint8, payload []byte, marker bool, advance uint32) {
	ph.out.Lock()
	defer ph.out.Unlock()
	ph.out.seq++
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: ph.out.seq, Timestamp: ph.out.ts, SSRC: 7, Marker: marker}, Payload: payload}
	ph.out.ts += advance
	b, _ := p.Marshal()
	_, _ = ph.rtp.WriteToUDPAddrPort(b, ph.out.to) // UDP: a lost packet is the network's business
}

// Say streams PCMU in 20 ms packets, paced in real time, until it is said
// or ctx ends.
func (ph *Softphone) Say(ctx context.Context, pcmu []byte) {
	next := time.Now()
	for i := 0; i < len(pcmu); i += 160 {
		frame := make([]byte, 160)
		for j := range frame {
			frame[j] = 0xFF
		}
		copy(frame, pcmu[i:min(i+160, len(pcmu))])
		ph.send(0, frame, i == 0, 160)
		next = next.Add(20 * time.Millisecond)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
	}
}

// Press sends a DTMF key as RFC 4733 events (three updates, then the end
// three times, as phones do).
func (ph *Softphone) Press(key byte) {
	code := byte(strings.IndexByte("0123456789*#ABCD", key))
	for i := range 6 {
		end := byte(0)
		if i >= 3 {
			end = 0x80
		}
		dur := uint16(160 * (i + 1))
		advance := uint32(0)
		if i == 5 {
			advance = 160 * 6
		}
		ph.send(101, []byte{code, end | 10, byte(dur >> 8), byte(dur)}, i == 0, advance)
		time.Sleep(20 * time.Millisecond)
	}
}

// PCMU is 16 kHz PCM as 8 kHz mu-law, as a phone network carries it.
func PCMU(pcm16k []int16) []byte {
	s := audio.NewResampler(16000, 8000).Process(pcm16k, nil)
	b, _ := audio.Encode(audio.Format{Encoding: audio.MuLaw, SampleRate: 8000}, s, nil)
	return b
}

// speechEnd is where the speech of an utterance ends (its last loud
// sample), in samples.
func speechEnd(pcm []int16) int {
	for i := len(pcm) - 1; i >= 0; i-- {
		if pcm[i] > 600 || pcm[i] < -600 {
			return i + 1
		}
	}
	return 0
}

// phoneCall runs one load-test phone call: it dials, waits for the steady
// state, says the utterance over and over for the duration, and measures
// each turn from the end of the caller's speech in RTP to the first reply
// RTP packet with speech.
func phoneCall(ctx context.Context, cfg Config, steady time.Time, ph callPhase) result {
	var r result
	phone, err := NewSoftphone(cfg.SIP)
	if err != nil {
		r.err = err
		return r
	}
	defer phone.Close()
	t0 := time.Now()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	d, err := phone.Call(cctx, cfg.Number, cfg.SIPUser, cfg.SIPPassword)
	cancel()
	if err != nil {
		r.err = fmt.Errorf("call: %w", err)
		return r
	}
	r.connect = ms(time.Since(t0))
	defer func() {
		bctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = d.Bye(bctx)
		cancel()
	}()
	utt := PCMU(cfg.Utterance)
	end := speechEnd(cfg.Utterance) / 2 // in 8 kHz samples, one byte each
	offset := ph.samples / 2
	time.Sleep(time.Until(steady.Add(ph.shift)))
	stop := time.Now().Add(cfg.Duration)
	for time.Now().Before(stop) {
		// One turn: from offset into the utterance to its end.
		chunk := utt[offset:]
		spokeAt := time.Time{}
		if offset == 0 { // a turn begun mid-sentence is not a fair one
			spokeAt = time.Now().Add(time.Duration(end) * time.Second / 8000)
		}
		phone.Reset()
		phone.Say(ctx, chunk)
		offset = 0
		if spokeAt.IsZero() {
			continue
		}
		if first := phone.FirstSpeech(); !first.IsZero() && first.After(spokeAt) {
			r.mouth = append(r.mouth, ms(first.Sub(spokeAt)))
		} else {
			r.err = errors.New("a turn went unanswered within the utterance's silence")
		}
	}
	return r
}
