package app_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"

	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/telephony"
	"github.com/agentvoicebox/avb/voice/audio"
	"github.com/agentvoicebox/avb/voice/stt"
)

// phonePlatform is a platform with its SIP endpoint on, and a tenant with
// a project, a trunk (digest credentials) and the number +15550100.
func phonePlatform(t *testing.T, extra map[string]string) (*platform, *store.Tenant, []string, string) {
	t.Helper()
	env := map[string]string{"AVB_SIP_ADDR": "127.0.0.1:0", "AVB_SIP_RTP_PORTS": "40000-44999"}
	for k, v := range extra {
		env[k] = v
	}
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), env), issuer, owner)
	ten := p.tenant("phone", store.TierPro)
	admin := bearer(p.token("ada", ten.ID.String(), "admin"))
	project := str(wantOK(t, p.call("/avb.v1.ProjectService/CreateProject", `{"name":"Phones"}`, admin...)), "project", "id")
	wantOK(t, p.call("/avb.v1.SipTrunkService/CreateSipTrunk", `{"sipTrunk":{"name":"carrier","username":"trunk1","password":"s3cret"}}`, admin...))
	wantOK(t, p.call("/avb.v1.PhoneNumberService/CreatePhoneNumber", `{"phoneNumber":{"name":"+15550100","projectId":"`+project+`"}}`, admin...))
	deadline := time.Now().Add(10 * time.Second)
	for !p.app.SIPAddr().IsValid() {
		if time.Now().After(deadline) {
			t.Fatal("the SIP endpoint did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p, ten, admin, project
}

// phone is a SIP user agent with RTP: the test's softphone.
type phone struct {
	t       *testing.T
	avb     netip.AddrPort
	ua      *sipgo.UserAgent
	dialogs *sipgo.DialogClientCache
	rtp     *net.UDPConn

	mu    sync.Mutex
	heard []byte    // what avb sent, in PCMU
	voice time.Time // when the first packet with speech came after reset
	last  time.Time // when the last one with speech came
	byes  chan struct{}
}

func newPhone(t *testing.T, avb netip.AddrPort) *phone {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("test-phone"), sipgo.WithUserAgentHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	sigConn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := sigConn.LocalAddr().(*net.UDPAddr).Port
	srv, _ := sipgo.NewServer(ua)
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientPort(port))
	if err != nil {
		t.Fatal(err)
	}
	ph := &phone{t: t, avb: avb, ua: ua, byes: make(chan struct{}, 4)}
	ph.dialogs = sipgo.NewDialogClientCache(cli, sip.ContactHeader{Address: sip.Uri{User: "caller", Host: "127.0.0.1", Port: port}})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if err := ph.dialogs.ReadBye(req, tx); err == nil {
			ph.byes <- struct{}{}
		}
	})
	go func() { _ = srv.ServeUDP(sigConn) }()
	if ph.rtp, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0"))); err != nil {
		t.Fatal(err)
	}
	go ph.listen()
	t.Cleanup(func() { _ = ph.rtp.Close(); _ = sigConn.Close(); _ = ua.Close() })
	return ph
}

// listen keeps what avb sends, noting when speech (not silence) begins.
func (ph *phone) listen() {
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
		speech := false
		for _, b := range p.Payload {
			if b != 0xFF {
				speech = true
				break
			}
		}
		ph.mu.Lock()
		if speech && ph.voice.IsZero() {
			ph.voice = time.Now()
		}
		if speech {
			ph.last = time.Now()
		}
		if !ph.voice.IsZero() {
			ph.heard = append(ph.heard, p.Payload...)
		}
		ph.mu.Unlock()
	}
}

// reset forgets what was heard.
func (ph *phone) reset() {
	ph.mu.Lock()
	ph.heard, ph.voice = nil, time.Time{}
	ph.mu.Unlock()
}

// call dials number with the credentials ("" for none): the SIP dialog
// once answered, and avb's media address.
func (ph *phone) call(number, user, password string) (*sipgo.DialogClientSession, netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	local := netip.MustParseAddrPort(ph.rtp.LocalAddr().String())
	offer := telephony.Describe(local, 42, nil)
	to := sip.Uri{User: number, Host: ph.avb.Addr().String(), Port: int(ph.avb.Port())}
	d, err := ph.dialogs.Invite(ctx, to, offer, sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{Username: user, Password: password}); err != nil {
		return nil, netip.AddrPort{}, err
	}
	if err := d.Ack(ctx); err != nil {
		return nil, netip.AddrPort{}, err
	}
	m, err := telephony.ParseOffer(d.InviteResponse.Body())
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	return d, m.Addr, nil
}

// sipStatus is the SIP status refusing a call (0: it was not refused).
func sipStatus(err error) int {
	var e *sipgo.ErrDialogResponse
	if errors.As(err, &e) {
		return e.Res.StatusCode
	}
	return 0
}

// rtpSender sends PCMU to avb in real time.
type rtpSender struct {
	mu   sync.Mutex
	conn *net.UDPConn
	to   netip.AddrPort
	seq  uint16
	ts   uint32
}

func (s *rtpSender) send(t *testing.T, pt uint8, payload []byte, marker bool) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: s.seq, Timestamp: s.ts, SSRC: 7, Marker: marker}, Payload: payload}
	b, _ := p.Marshal()
	_, _ = s.conn.WriteToUDPAddrPort(b, s.to) // UDP: a lost packet is the network's business
}

// say streams pcmu in 20 ms packets, paced in real time.
func (s *rtpSender) say(t *testing.T, pcmu []byte) {
	t.Helper()
	next := time.Now()
	for i := 0; i < len(pcmu); i += 160 {
		frame := make([]byte, 160)
		copy(frame, pcmu[i:min(i+160, len(pcmu))])
		s.send(t, 0, frame, i == 0)
		s.mu.Lock()
		s.ts += 160
		s.mu.Unlock()
		next = next.Add(20 * time.Millisecond)
		time.Sleep(time.Until(next))
	}
}

// press sends a DTMF digit as RFC 4733 events (three updates, then three
// end packets, as phones do).
func (s *rtpSender) press(t *testing.T, digit byte) {
	t.Helper()
	code := byte(strings.IndexByte("0123456789*#", digit))
	for i := range 6 {
		end := byte(0)
		if i >= 3 {
			end = 0x80
		}
		dur := uint16(160 * (i + 1))
		s.send(t, 101, []byte{code, end | 10, byte(dur >> 8), byte(dur)}, i == 0)
		time.Sleep(20 * time.Millisecond)
	}
	s.mu.Lock()
	s.ts += 160 * 6
	s.mu.Unlock()
}

// pcmu is text spoken by espeak-ng as 8 kHz mu-law, silence after it.
func pcmu(t *testing.T, text string, silenceMS int) []byte {
	t.Helper()
	s := audio.NewResampler(16000, 8000).Process(spokenPCM(t, text, silenceMS), nil)
	b, err := audio.Encode(audio.Format{Encoding: audio.MuLaw, SampleRate: 8000}, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recognizedPCMU is what pocketsphinx hears in 8 kHz mu-law, among phrases.
func recognizedPCMU(t *testing.T, b []byte, phrases ...string) string {
	t.Helper()
	s, _ := audio.Decode(audio.Format{Encoding: audio.MuLaw, SampleRate: 8000}, b, nil)
	s = audio.NewResampler(8000, 16000).Process(s, nil)
	sess, err := stt.NewPocketsphinx("", 1).Start(context.Background(), stt.Options{Phrases: phrases})
	if err != nil {
		t.Fatal(err)
	}
	_ = sess.Write(s)
	text, _ := sess.Finish()
	return text
}

// A phone call from a SIP trunk: refused for an unknown number (404),
// without credentials (401 challenge) and with wrong ones (403); answered
// with the trunk's digest credentials. The caller's request, spoken into
// RTP as PCMU in real time, is transcribed, and the agent's reply comes
// back as RTP that pocketsphinx recognizes. A DTMF key reaches the session
// and the model. A second call at the tenant's cap of one is busy (486).
// The caller hangs up with BYE and the session ends completed; a call the
// platform ends is hung up with a BYE from avb.
func TestPhoneCallThroughATrunk(t *testing.T) {
	t.Parallel()
	p, _, admin, project := phonePlatform(t, map[string]string{"AVB_MAX_CALLS_PER_TENANT": "1"})
	ph := newPhone(t, p.app.SIPAddr())

	if _, _, err := ph.call("+15550199", "trunk1", "s3cret"); sipStatus(err) != 404 {
		t.Fatalf("unknown number: %v", err)
	}
	if _, _, err := ph.call("+15550100", "", ""); sipStatus(err) != 401 {
		t.Fatalf("no credentials: %v", err)
	}
	if _, _, err := ph.call("+15550100", "trunk1", "wrong"); sipStatus(err) != 403 {
		t.Fatalf("wrong credentials: %v", err)
	}

	d, media, err := ph.call("+15550100", "trunk1", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	out := &rtpSender{conn: ph.rtp, to: media}
	ask := "please book a meeting for tomorrow at ten"
	out.say(t, pcmu(t, ask, 0))
	spoke := time.Now()
	// The line stays open: silence, as a phone sends.
	quiet := make([]byte, 8*3000)
	for i := range quiet {
		quiet[i] = 0xFF
	}
	go out.say(t, quiet)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ph.mu.Lock()
		// The whole reply: speech, then 700 ms of silence.
		ok := !ph.voice.IsZero() && len(ph.heard) > 8000 && time.Since(ph.last) > 700*time.Millisecond
		n := len(ph.heard)
		ph.mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			sessions := wantOK(t, p.call("/avb.v1.SessionService/ListSessions", `{"projectId":"`+project+`"}`, admin...))
			t.Fatalf("no reply heard (%d bytes): sessions %v", n, sessions)
		}
	}
	ph.mu.Lock()
	mouthToEar := ph.voice.Sub(spoke)
	reply := append([]byte(nil), ph.heard...)
	ph.mu.Unlock()
	t.Logf("mouth to ear: %s (end of the caller's speech in RTP to the reply's first RTP packet, from the phone)", mouthToEar.Round(time.Millisecond))
	if got := recognizedPCMU(t, reply, "sure i booked the meeting for tomorrow at ten", "hello", "goodbye"); !strings.Contains(got, "booked the meeting") {
		t.Fatalf("the reply's RTP sounds like %q", got)
	}

	// The session is the project's, with the caller's transcript.
	sessions := items(wantOK(t, p.call("/avb.v1.SessionService/ListSessions", `{"projectId":"`+project+`"}`, admin...)), "sessions")
	if len(sessions) != 1 {
		t.Fatalf("sessions %v", sessions)
	}
	sid := sessions[0].(map[string]any)["id"].(string)
	events := func() string {
		return fmt.Sprint(items(wantOK(t, p.call("/avb.v1.SessionService/ListSessionEvents", `{"sessionId":"`+sid+`","pageSize":200}`, admin...)), "events"))
	}
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(events(), ask) })
	if ev := events(); !strings.Contains(ev, "phone.call") || !strings.Contains(ev, "trunk:carrier") && !strings.Contains(ev, "carrier") {
		t.Fatalf("no phone.call event: %s", ev)
	}

	// A key pressed is a session event and a turn the model answers.
	ph.reset()
	out.press(t, '5')
	waitFor(t, 5*time.Second, func() bool {
		ev := events()
		return strings.Contains(ev, "digit:5") && strings.Contains(ev, "The caller pressed 5 on the keypad.")
	})

	// At the tenant's cap of one live call, a second is busy.
	ph2 := newPhone(t, p.app.SIPAddr())
	if _, _, err := ph2.call("+15550100", "trunk1", "s3cret"); sipStatus(err) != 486 {
		t.Fatalf("a call over the cap: %v", err)
	}

	// The caller hangs up: the session ends completed.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool {
		s := wantOK(t, p.call("/avb.v1.SessionService/GetSession", `{"sessionId":"`+sid+`"}`, admin...))
		return str(s, "session", "status") == "SESSION_STATUS_COMPLETED"
	})
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(events(), "phone.quality") })

	// A call the platform ends (TerminateSession) is hung up from avb.
	d2, _, err := ph2.call("+15550100", "trunk1", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	_ = d2
	var sid2 string
	waitFor(t, 5*time.Second, func() bool {
		for _, s := range items(wantOK(t, p.call("/avb.v1.SessionService/ListSessions", `{"projectId":"`+project+`","status":"SESSION_STATUS_ACTIVE"}`, admin...)), "sessions") {
			sid2 = s.(map[string]any)["id"].(string)
		}
		return sid2 != ""
	})
	wantOK(t, p.call("/avb.v1.SessionService/TerminateSession", `{"sessionId":"`+sid2+`"}`, admin...))
	select {
	case <-ph2.byes:
	case <-time.After(5 * time.Second):
		t.Fatal("avb did not hang up the call it ended")
	}
}
