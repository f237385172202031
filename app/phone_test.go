package app_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/loadtest"
	"github.com/agentvoicebox/avb/store"
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
	project := givePhone(t, p, admin, `{"name":"Phones"}`)
	deadline := time.Now().Add(10 * time.Second)
	for !p.app.SIPAddr().IsValid() {
		if time.Now().After(deadline) {
			t.Fatal("the SIP endpoint did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p, ten, admin, project
}

// givePhone creates the project (as JSON), the trunk "carrier"
// (trunk1/s3cret) and the number +15550100 ringing the project.
func givePhone(t *testing.T, p *platform, admin []string, project string) string {
	t.Helper()
	id := str(wantOK(t, p.call("/avb.v1.ProjectService/CreateProject", project, admin...)), "project", "id")
	wantOK(t, p.call("/avb.v1.SipTrunkService/CreateSipTrunk", `{"sipTrunk":{"name":"carrier","username":"trunk1","password":"s3cret"}}`, admin...))
	wantOK(t, p.call("/avb.v1.PhoneNumberService/CreatePhoneNumber", `{"phoneNumber":{"name":"+15550100","projectId":"`+id+`"}}`, admin...))
	return id
}

// softphone is a phone calling the platform's SIP endpoint.
func softphone(t *testing.T, p *platform) *loadtest.Softphone {
	t.Helper()
	ph, err := loadtest.NewSoftphone(p.app.SIPAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ph.Close)
	return ph
}

// dial calls +15550100 with the credentials, within 10 s.
func dial(ph *loadtest.Softphone, number, user, password string) (*loadtest.Dialog, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return ph.Call(ctx, number, user, password)
}

// recognizedPCMU is what pocketsphinx hears in 8 kHz mu-law, among phrases.
func recognizedPCMU(t *testing.T, b []byte, phrases ...string) string {
	t.Helper()
	s, _ := audio.Decode(audio.Format{Encoding: audio.MuLaw, SampleRate: 8000}, b, nil)
	return recognized16(t, audio.NewResampler(8000, 16000).Process(s, nil), phrases...)
}

// recognized16 is what pocketsphinx hears in 16 kHz audio, among phrases.
func recognized16(t testing.TB, s []int16, phrases ...string) string {
	t.Helper()
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
	ph := softphone(t, p)

	if _, err := dial(ph, "+15550199", "trunk1", "s3cret"); loadtest.SIPStatus(err) != 404 {
		t.Fatalf("unknown number: %v", err)
	}
	if _, err := dial(ph, "+15550100", "", ""); loadtest.SIPStatus(err) != 401 {
		t.Fatalf("no credentials: %v", err)
	}
	if _, err := dial(ph, "+15550100", "trunk1", "wrong"); loadtest.SIPStatus(err) != 403 {
		t.Fatalf("wrong credentials: %v", err)
	}

	d, err := dial(ph, "+15550100", "trunk1", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ph.Say(ctx, loadtest.PCMU(spokenPCM(t, ask, 0)))
	spoke := time.Now()
	// The line stays open: silence, as a phone sends.
	go ph.Say(ctx, loadtest.PCMU(make([]int16, 16000*3)))
	rctx, rcancel := context.WithTimeout(ctx, 15*time.Second)
	reply, first, err := ph.Reply(rctx, 700*time.Millisecond)
	rcancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mouth to ear: %s (end of the caller's speech in RTP to the reply's first RTP packet, from the phone)", first.Sub(spoke).Round(time.Millisecond))
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
	ph.Press('5')
	waitFor(t, 5*time.Second, func() bool {
		ev := events()
		return strings.Contains(ev, "digit:5") && strings.Contains(ev, "The caller pressed 5 on the keypad.")
	})

	// At the tenant's cap of one live call, a second is busy.
	ph2 := softphone(t, p)
	if _, err := dial(ph2, "+15550100", "trunk1", "s3cret"); loadtest.SIPStatus(err) != 486 {
		t.Fatalf("a call over the cap: %v", err)
	}

	// The caller hangs up: the session ends completed.
	bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer bcancel()
	if err := d.Bye(bctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool {
		s := wantOK(t, p.call("/avb.v1.SessionService/GetSession", `{"sessionId":"`+sid+`"}`, admin...))
		return str(s, "session", "status") == "SESSION_STATUS_COMPLETED"
	})
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(events(), "phone.quality") })
	for _, e := range items(wantOK(t, p.call("/avb.v1.SessionService/ListSessionEvents", `{"sessionId":"`+sid+`","pageSize":200}`, admin...)), "events") {
		if ev := e.(map[string]any); ev["type"] == "phone.quality" {
			t.Logf("call quality: %v", ev["data"])
		}
	}
	// Phone minutes are a usage metric of their own.
	waitFor(t, 5*time.Second, func() bool {
		usage := wantOK(t, p.call("/avb.v1.BillingService/GetUsage", `{}`, admin...))["usage"].(map[string]any)
		m, _ := usage["phoneMinutes"].(float64)
		return m > 0 && m < 1
	})

	// A call the platform ends (TerminateSession) is hung up from avb.
	if _, err := dial(ph2, "+15550100", "trunk1", "s3cret"); err != nil {
		t.Fatal(err)
	}
	var sid2 string
	waitFor(t, 5*time.Second, func() bool {
		for _, s := range items(wantOK(t, p.call("/avb.v1.SessionService/ListSessions", `{"projectId":"`+project+`","status":"SESSION_STATUS_ACTIVE"}`, admin...)), "sessions") {
			sid2 = s.(map[string]any)["id"].(string)
		}
		return sid2 != ""
	})
	wantOK(t, p.call("/avb.v1.SessionService/TerminateSession", `{"sessionId":"`+sid2+`"}`, admin...))
	select {
	case <-ph2.Byes():
	case <-time.After(5 * time.Second):
		t.Fatal("avb did not hang up the call it ended")
	}
}

// TestPhoneLoad measures phone calls against Converse calls in the same
// run, on a server of its own: mouth to ear at each count of concurrent
// phone calls (AVB_PHONELOAD=1,20), then the same count of full-pipeline
// Converse calls saying the same words, with the server's CPU per call of
// each.
func TestPhoneLoad(t *testing.T) {
	counts := os.Getenv("AVB_PHONELOAD")
	if counts == "" {
		t.Skip("set AVB_PHONELOAD=1,20 to measure phone calls")
	}
	sip := netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)))
	t.Setenv("AVB_LOADTEST_SERVER_AVB_SIP_ADDR", sip.String())
	t.Setenv("AVB_LOADTEST_SERVER_AVB_SIP_RTP_PORTS", "45000-49999")
	base, key, logs, p, admin := loadPlatformAdmin(t, true)
	// The phone calls' project listens for the same phrases as the
	// Converse calls: the recognizer's grammar is most of a call's CPU.
	hints, _ := json.Marshal(callConfig.PhraseHints)
	givePhone(t, p, admin, `{"name":"Phones","voiceDefaults":{"phraseHints":`+string(hints)+`}}`)
	utt := spokenPCM(t, ask, 3500)
	for _, c := range splitInts(t, counts) {
		for _, mode := range []loadtest.Mode{loadtest.Phone, loadtest.Full} {
			measure(t, loadtest.Config{Server: base, APIKey: key, Calls: c, Mode: mode, Utterance: utt, Phrases: callConfig.PhraseHints,
				SIP: sip, Number: "+15550100", SIPUser: "trunk1", SIPPassword: "s3cret"}, logs)
		}
	}
}

// Outbound: CallService.Dial places a call through a trunk to the test's
// phone, which rings and answers; the session tells ringing and answered,
// the phone's caller asks, and the agent's reply comes back over RTP. A
// busy phone ends its session as error with the reason and a phone.busy
// event. A trunk without an outbound address is refused on the field.
func TestDialPlacesACallThroughATrunk(t *testing.T) {
	t.Parallel()
	p, _, admin, project := phonePlatform(t, nil)
	ph := softphone(t, p)
	trunk := str(wantOK(t, p.call("/avb.v1.SipTrunkService/CreateSipTrunk",
		`{"sipTrunk":{"name":"out","outboundAddress":"`+ph.Addr().String()+`"}}`, admin...)), "sipTrunk", "id")
	inboundOnly := str(wantOK(t, p.call("/avb.v1.SipTrunkService/ListSipTrunks", `{"nameContains":"carrier"}`, admin...)), "sipTrunks", "0", "id")
	r := p.call("/avb.v1.CallService/Dial", `{"sipTrunkId":"`+inboundOnly+`","to":"+15550142"}`, admin...)
	wantErr(t, r, 400, "invalid_argument", "validation_failed")
	if !strings.Contains(r.raw, "sip_trunk_id") {
		t.Fatalf("not on the field: %s", r.raw)
	}

	events := func(sid string) string {
		return fmt.Sprint(items(wantOK(t, p.call("/avb.v1.SessionService/ListSessionEvents", `{"sessionId":"`+sid+`","pageSize":200}`, admin...)), "events"))
	}
	dialed := wantOK(t, p.call("/avb.v1.CallService/Dial", `{"sipTrunkId":"`+trunk+`","to":"+15550142","from":"+15550100","projectId":"`+project+`"}`, admin...))
	sid := str(dialed, "session", "id")
	select {
	case inv := <-ph.Rings():
		if inv.Recipient.User != "+15550142" {
			t.Fatalf("dialed %s", inv.Recipient.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the phone never rang")
	}
	waitFor(t, 5*time.Second, func() bool {
		ev := events(sid)
		return strings.Contains(ev, "phone.ringing") && strings.Contains(ev, "phone.answered")
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ph.Say(ctx, loadtest.PCMU(spokenPCM(t, ask, 0)))
	go ph.Say(ctx, loadtest.PCMU(make([]int16, 16000*3)))
	rctx, rcancel := context.WithTimeout(ctx, 15*time.Second)
	reply, _, err := ph.Reply(rctx, 700*time.Millisecond)
	rcancel()
	if err != nil {
		t.Fatalf("%v\nevents: %s", err, events(sid))
	}
	if got := recognizedPCMU(t, reply, "sure i booked the meeting for tomorrow at ten", "hello", "goodbye"); !strings.Contains(got, "booked the meeting") {
		t.Fatalf("the reply's RTP sounds like %q", got)
	}
	wantOK(t, p.call("/avb.v1.SessionService/TerminateSession", `{"sessionId":"`+sid+`"}`, admin...))
	select {
	case <-ph.Byes():
	case <-time.After(5 * time.Second):
		t.Fatal("avb did not hang up the call it placed")
	}

	// A busy line.
	ph.AnswerWith(486)
	busy := str(wantOK(t, p.call("/avb.v1.CallService/Dial", `{"sipTrunkId":"`+trunk+`","to":"+15550143","projectId":"`+project+`"}`, admin...)), "session", "id")
	waitFor(t, 10*time.Second, func() bool {
		s := wantOK(t, p.call("/avb.v1.SessionService/GetSession", `{"sessionId":"`+busy+`"}`, admin...))
		return str(s, "session", "status") == "SESSION_STATUS_ERROR" && strings.Contains(str(s, "session", "error"), "busy")
	})
	if ev := events(busy); !strings.Contains(ev, "phone.busy") || !strings.Contains(ev, "sip_status:486") {
		t.Fatalf("busy events: %s", ev)
	}
}

// The transfer tool on a phone call: the caller asks for a human ("i want
// to talk to a human": at 8 kHz pocketsphinx does not hear espeak-ng say
// "transfer me to a human"), the agent says it transfers, then avb sends a
// REFER to the trunk with the tool's target and hangs up once it is
// accepted; the session records it.
func TestTransferOnAPhoneCallSendsARefer(t *testing.T) {
	t.Parallel()
	p, admin, project, ph := transferLine(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ph.Say(ctx, loadtest.PCMU(spokenPCM(t, "i want to talk to a human", 0)))
	go ph.Say(ctx, loadtest.PCMU(make([]int16, 16000*8)))
	select {
	case to := <-ph.Refers():
		if !strings.Contains(to, "sip:+15550177@") {
			t.Fatalf("Refer-To %s", to)
		}
	case <-time.After(20 * time.Second):
		sessions := items(wantOK(t, p.call("/avb.v1.SessionService/ListSessions", `{"projectId":"`+project+`"}`, admin...)), "sessions")
		sid := sessions[0].(map[string]any)["id"].(string)
		t.Fatalf("no REFER; events %v", items(wantOK(t, p.call("/avb.v1.SessionService/ListSessionEvents", `{"sessionId":"`+sid+`","pageSize":200}`, admin...)), "events"))
	}
	select {
	case <-ph.Byes():
	case <-time.After(5 * time.Second):
		t.Fatal("avb kept the call after the transfer was accepted")
	}
	sessions := items(wantOK(t, p.call("/avb.v1.SessionService/ListSessions", `{"projectId":"`+project+`"}`, admin...)), "sessions")
	sid := sessions[0].(map[string]any)["id"].(string)
	waitFor(t, 5*time.Second, func() bool {
		ev := fmt.Sprint(items(wantOK(t, p.call("/avb.v1.SessionService/ListSessionEvents", `{"sessionId":"`+sid+`","pageSize":200}`, admin...)), "events"))
		return strings.Contains(ev, "phone.transferred") && strings.Contains(ev, "Transferring you now")
	})
}

// A trunk's OPTIONS keepalive is answered; a re-INVITE offering sendonly
// holds the call (avb sends no RTP meanwhile) and one offering sendrecv
// resumes it.
func TestOptionsAndHold(t *testing.T) {
	t.Parallel()
	p, _, _, _ := phonePlatform(t, nil)
	ph := softphone(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := ph.Options(ctx)
	if err != nil || res.StatusCode != 200 || res.GetHeader("Allow") == nil || !strings.Contains(res.GetHeader("Allow").Value(), "INVITE") {
		t.Fatalf("OPTIONS: %v %v", res, err)
	}
	d, err := dial(ph, "+15550100", "trunk1", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	go ph.Say(ctx, loadtest.PCMU(make([]int16, 16000*10)))
	waitFor(t, 3*time.Second, func() bool { return ph.Packets() > 10 })
	if st, err := ph.Hold(ctx, d, true); err != nil || st != 200 {
		t.Fatalf("hold: %d %v", st, err)
	}
	time.Sleep(100 * time.Millisecond) // packets already on their way
	held := ph.Packets()
	time.Sleep(500 * time.Millisecond)
	if n := ph.Packets() - held; n > 0 {
		t.Fatalf("%d RTP packets sent while on hold", n)
	}
	if st, err := ph.Hold(ctx, d, false); err != nil || st != 200 {
		t.Fatalf("resume: %d %v", st, err)
	}
	resumed := ph.Packets()
	waitFor(t, 3*time.Second, func() bool { return ph.Packets() > resumed+10 })
	_ = d.Bye(ctx)
}

// SIP over TLS: a trunk that encrypts its signalling reaches avb on the
// TLS port with avb's certificate; a request over it is answered on the
// same connection.
func TestSIPOverTLS(t *testing.T) {
	t.Parallel()
	cert, key := testenv.SelfSigned(t)
	p, _, _, _ := phonePlatform(t, map[string]string{"AVB_SIP_TLS_ADDR": "127.0.0.1:0", "AVB_SIP_TLS_CERT_FILE": cert, "AVB_SIP_TLS_KEY_FILE": key})
	pemBytes, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)
	addr := p.app.SIPTLSAddr()
	conn, err := tls.Dial("tcp", addr.String(), &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	local := conn.LocalAddr().String()
	req := "OPTIONS sip:" + addr.String() + ";transport=tls SIP/2.0\r\n" +
		"Via: SIP/2.0/TLS " + local + ";branch=z9hG4bK-tls-1\r\n" +
		"From: <sip:trunk@127.0.0.1>;tag=t1\r\nTo: <sip:avb@127.0.0.1>\r\nCall-ID: tls-1@test\r\n" +
		"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "SIP/2.0 200") {
		t.Fatalf("over TLS: %q %v", line, err)
	}
}

// An offer with no codec avb speaks is refused 488; a source that starts
// calls faster than AVB_SIP_RATE_LIMIT is answered 503.
func TestNoCommonCodecAndFloods(t *testing.T) {
	t.Parallel()
	p, _, _, _ := phonePlatform(t, map[string]string{"AVB_SIP_RATE_LIMIT": "3"})
	ph := softphone(t, p)
	ph.Offer = []byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n")
	if _, err := dial(ph, "+15550100", "trunk1", "s3cret"); loadtest.SIPStatus(err) != 488 {
		t.Fatalf("G.729 only: %v", err)
	}
	// Each call is two INVITEs (the challenge, then the answer to it):
	// the next ones within the second are over the limit.
	refused := 0
	for range 3 {
		if _, err := dial(ph, "+15550100", "trunk1", "s3cret"); loadtest.SIPStatus(err) == 503 {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("a flood was not limited")
	}
}

// A trunk that answers nothing (hung) and an address where nothing
// listens (refused): a placed call ends within its ring bound, as an error
// the session says (no_answer or failed), and never hangs.
func TestDialToATrunkThatIsHungOrGone(t *testing.T) {
	t.Parallel()
	p, _, admin, project := phonePlatform(t, nil)
	hung, err := net.ListenPacket("udp", "127.0.0.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	gone, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	goneAddr := gone.LocalAddr().String()
	gone.Close()
	for name, addr := range map[string]string{"hung": hung.LocalAddr().String(), "refused": goneAddr} {
		trunk := str(wantOK(t, p.call("/avb.v1.SipTrunkService/CreateSipTrunk", `{"sipTrunk":{"name":"`+name+`","outboundAddress":"`+addr+`"}}`, admin...)), "sipTrunk", "id")
		start := time.Now()
		sid := str(wantOK(t, p.call("/avb.v1.CallService/Dial", `{"sipTrunkId":"`+trunk+`","to":"+15550142","projectId":"`+project+`","ringTimeoutSeconds":1}`, admin...)), "session", "id")
		waitFor(t, 6*time.Second, func() bool {
			s := wantOK(t, p.call("/avb.v1.SessionService/GetSession", `{"sessionId":"`+sid+`"}`, admin...))
			return str(s, "session", "status") == "SESSION_STATUS_ERROR" && strings.Contains(str(s, "session", "error"), "not answered")
		})
		t.Logf("%s trunk: the placed call ended in %s", name, time.Since(start).Round(time.Millisecond))
	}
}

// transferLine is a call, through the trunk, to +15550111, answered by a
// persona whose transfer tool's target is +15550177.
func transferLine(t *testing.T) (*platform, []string, string, *loadtest.Softphone) {
	t.Helper()
	p, _, admin, project := phonePlatform(t, nil)
	persona := str(wantOK(t, p.call("/avb.v1.PersonaService/CreatePersona",
		`{"persona":{"name":"desk","tools":[{"name":"transfer","kind":"TOOL_KIND_TRANSFER","transferTarget":"+15550177"}]}}`, admin...)), "persona", "id")
	wantOK(t, p.call("/avb.v1.PhoneNumberService/CreatePhoneNumber", `{"phoneNumber":{"name":"+15550111","projectId":"`+project+`","personaId":"`+persona+`"}}`, admin...))
	ph := softphone(t, p)
	if _, err := dial(ph, "+15550111", "trunk1", "s3cret"); err != nil {
		t.Fatal(err)
	}
	return p, admin, project, ph
}

// A transfer the far end declines (603), or never answers: the REFER fails
// within its 5 s bound, phone.transfer_failed says why, and the call goes
// on (the caller may ask again).
func TestTransferDeclinedOrUnanswered(t *testing.T) {
	t.Parallel()
	p, admin, project, ph := transferLine(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	failures := func() int {
		sessions := items(wantOK(t, p.call("/avb.v1.SessionService/ListSessions", `{"projectId":"`+project+`"}`, admin...)), "sessions")
		ev := fmt.Sprint(items(wantOK(t, p.call("/avb.v1.SessionService/ListSessionEvents", `{"sessionId":"`+sessions[0].(map[string]any)["id"].(string)+`","pageSize":200}`, admin...)), "events"))
		return strings.Count(ev, "phone.transfer_failed")
	}
	for i, answer := range []int{603, 0} {
		ph.ReferWith(answer)
		start := time.Now()
		ph.Say(ctx, loadtest.PCMU(spokenPCM(t, "i want to talk to a human", 1500)))
		waitFor(t, 15*time.Second, func() bool { return failures() == i+1 })
		t.Logf("REFER answered %d: the transfer failed %s after the ask", answer, time.Since(start).Round(time.Millisecond))
	}
	select {
	case <-ph.Byes():
		t.Fatal("a failed transfer hung up the call")
	default:
	}
}
