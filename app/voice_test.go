package app_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/agentvoicebox/avb/apierror"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/voice/audio"
	"github.com/agentvoicebox/avb/voice/tts"
)

const ask = "please book a meeting for tomorrow at ten"

var replyHints = []string{"sure i booked the meeting for tomorrow at ten", "okay your meeting is cancelled", "hello how can i help you today"}

// h2c speaks HTTP/2 without TLS: bidirectional streams need HTTP/2.
func h2c() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

// withKey sends an API key on every request and stream.
func withKey(key string) connect.ClientOption {
	return connect.WithInterceptors(keyInterceptor(key))
}

type keyInterceptor string

func (k keyInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("X-API-Key", string(k))
		return next(ctx, req)
	}
}

func (k keyInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("X-API-Key", string(k))
		return conn
	}
}

func (k keyInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// spoken is espeak-ng saying text, as 16 kHz PCM16 bytes, with silence after it.
func spoken(t testing.TB, text string, silenceMS int) []byte {
	t.Helper()
	b, _ := audio.Encode(audio.Format{Encoding: audio.PCM16, SampleRate: 16000}, spokenPCM(t, text, silenceMS), nil)
	return b
}

// spokenPCM is text spoken by espeak-ng at 16 kHz, then silenceMS of silence.
func spokenPCM(t testing.TB, text string, silenceMS int) []int16 {
	t.Helper()
	e, err := tts.NewEspeak()
	if err != nil {
		t.Fatal(err)
	}
	rs := audio.NewResampler(e.SampleRate(), 16000)
	var pcm []int16
	if err := e.Synthesize(context.Background(), tts.Request{Text: text}, func(s []int16) error {
		pcm = rs.Process(s, pcm)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return append(pcm, make([]int16, 16*silenceMS)...)
}

func heard(t testing.TB, pcm24k []byte) string {
	t.Helper()
	return recognized(t, pcm24k, replyHints...)
}

var callConfig = &avbv1.SessionConfig{
	PhraseHints: []string{ask, "cancel my meeting", "hello"},
	// Defaults otherwise: pcm16 16 kHz in, pcm16 24 kHz out, server VAD.
}

// turn is what one conversational turn produced.
type turn struct {
	final, reply string
	audio        []byte
	done         *avbv1.ResponseDone
	sessionID    string
	events       []*avbv1.VoiceEvent
	stopToAudio  time.Duration // SpeechStopped received -> first audio received
	open         time.Duration // start sent -> SessionStarted received
}

// converse runs one turn over Converse: real-time paced 20 ms frames in,
// events out until the reply is done.
func converse(t testing.TB, client avbv1connect.VoiceServiceClient, pace time.Duration) turn {
	t.Helper()
	return converseIn(t, client, pace, "")
}

// converseIn is converse in a session made with CreateSession ("" starts
// one); an error event fails the test.
func converseIn(t testing.TB, client avbv1connect.VoiceServiceClient, pace time.Duration, sessionID string) turn {
	t.Helper()
	return converseTurn(t, client, &avbv1.SessionStart{SessionId: sessionID, Config: callConfig}, pace,
		func(ev *avbv1.VoiceEvent, _ func(*avbv1.ClientControl)) {
			if e := ev.GetError(); e != nil {
				t.Fatalf("error event: %v", e)
			}
		})
}

// converseTurn opens a stream with start, says the request in frames one
// every pace, and lets answer act on each event (send controls) until the
// reply is done; then it hangs up and expects a clean end.
func converseTurn(t testing.TB, client avbv1connect.VoiceServiceClient, start *avbv1.SessionStart, pace time.Duration,
	answer func(ev *avbv1.VoiceEvent, send func(*avbv1.ClientControl))) turn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream := client.Converse(ctx)
	opened := time.Now()
	if err := stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Start{Start: start}}); err != nil {
		t.Fatal(err)
	}
	go askIn(t, stream, pace)
	send := func(c *avbv1.ClientControl) {
		if err := stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Control{Control: c}}); err != nil {
			t.Error(err)
		}
	}
	var tr turn
	var stopped time.Time
	for {
		msg, err := stream.Receive()
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		ev := msg.GetEvent()
		tr.events = append(tr.events, ev)
		if answer != nil {
			answer(ev, send)
		}
		switch e := ev.GetEvent().(type) {
		case *avbv1.VoiceEvent_SessionStarted:
			tr.sessionID = e.SessionStarted.GetSession().GetId()
			tr.open = time.Since(opened)
		case *avbv1.VoiceEvent_SpeechStopped:
			stopped = time.Now()
		case *avbv1.VoiceEvent_TranscriptFinal:
			tr.final = e.TranscriptFinal.GetText()
		case *avbv1.VoiceEvent_ResponseTextDelta:
			tr.reply += e.ResponseTextDelta.GetText()
		case *avbv1.VoiceEvent_ResponseAudioDelta:
			if len(tr.audio) == 0 && !stopped.IsZero() {
				tr.stopToAudio = time.Since(stopped)
			}
			tr.audio = append(tr.audio, e.ResponseAudioDelta.GetAudio()...)
		case *avbv1.VoiceEvent_ResponseDone:
			tr.done = e.ResponseDone
			if err := stream.CloseRequest(); err != nil {
				t.Fatal(err)
			}
			for {
				if _, err := stream.Receive(); err != nil {
					if !errors.Is(err, io.EOF) {
						t.Fatalf("stream ended with %v", err)
					}
					return tr
				}
			}
		}
	}
}

// endedSession waits (up to 5 s) for a session to be recorded as no longer
// active, and returns it with its stored events.
func endedSession(t testing.TB, sessions avbv1connect.SessionServiceClient, id string) (*avbv1.Session, []*avbv1.SessionEvent) {
	t.Helper()
	var sess *avbv1.Session
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		res, err := sessions.GetSession(context.Background(), connect.NewRequest(&avbv1.GetSessionRequest{SessionId: id}))
		if err != nil {
			t.Fatal(err)
		}
		if sess = res.Msg.GetSession(); sess.GetStatus() != avbv1.SessionStatus_SESSION_STATUS_ACTIVE || time.Now().After(deadline) {
			break
		}
	}
	evs, err := sessions.ListSessionEvents(context.Background(), connect.NewRequest(&avbv1.ListSessionEventsRequest{SessionId: id}))
	if err != nil {
		t.Fatal(err)
	}
	return sess, evs.Msg.GetEvents()
}

// askIn says the request into a Converse stream in 20 ms frames, one every
// pace (20 ms: real time), until it is said or the stream is closed.
func askIn(t testing.TB, stream *connect.BidiStreamForClient[avbv1.ConverseRequest, avbv1.ConverseResponse], pace time.Duration) {
	b := spoken(t, ask, 800)
	for i := 0; i < len(b); i += 640 {
		if stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Audio{Audio: &avbv1.AudioAppend{Audio: b[i:min(i+640, len(b))]}}}) != nil {
			return
		}
		time.Sleep(pace)
	}
}

// The call end to end, over the Connect protocol and over gRPC: espeak-ng
// asks in real-time 20 ms frames, the transcript matches, the scripted model
// answers, the reply audio says the answer, and the session ends completed
// with its metrics and events stored.
func TestVoiceCallEndToEnd(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("voice", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))["secret"].(string)
	for name, opt := range map[string]connect.ClientOption{"connect": connect.WithProtoJSON(), "grpc": connect.WithGRPC()} {
		t.Run(name, func(t *testing.T) {
			client := avbv1connect.NewVoiceServiceClient(h2c(), p.base, opt, withKey(key))
			tr := converse(t, client, 20*time.Millisecond)
			if tr.final != ask {
				t.Fatalf("transcript %q", tr.final)
			}
			if tr.reply != "Sure. I booked the meeting for tomorrow at ten." || tr.done.GetInterrupted() {
				t.Fatalf("reply %q", tr.reply)
			}
			if got := heard(t, tr.audio); got != replyHints[0] {
				t.Fatalf("the reply audio says %q", got)
			}
			t.Logf("%s: end of speech -> first audio byte at the client: %s (server: %.2f ms)", name, tr.stopToAudio, tr.done.GetLatency().GetFirstByteMs())

			sessions := avbv1connect.NewSessionServiceClient(http.DefaultClient, p.base, withKey(key))
			sess, evs := endedSession(t, sessions, tr.sessionID)
			m := sess.GetMetrics()
			if sess.GetStatus() != avbv1.SessionStatus_SESSION_STATUS_COMPLETED || m.GetTurns() != 1 || m.GetOutputTokens() == 0 ||
				m.GetInputTokens() == 0 || m.GetInputAudioSeconds() < 2 || m.GetOutputAudioSeconds() < 1 || m.GetDurationSeconds() <= 0 {
				t.Fatalf("session %v metrics %v", sess.GetStatus(), m)
			}
			var types []string
			for _, e := range evs {
				types = append(types, e.GetType())
			}
			if !slices.Equal(types, []string{"transcript", "response"}) {
				t.Fatalf("stored events %v", types)
			}
		})
	}
}

// Property 10: a stream without valid credentials is refused before any
// message is processed: no session is created.
func TestVoiceStreamsRequireCredentials(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("nokey", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	revoked := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"old","scopes":["API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))
	wantOK(t, p.call("/avb.v1.ApiKeyService/RevokeApiKey", `{"apiKeyId":"`+revoked["apiKey"].(map[string]any)["id"].(string)+`"}`, bearer(admin)...))
	billing := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"bill","scopes":["API_KEY_SCOPE_BILLING"]}`, bearer(admin)...))["secret"].(string)
	cases := map[string]struct {
		opts   []connect.ClientOption
		code   connect.Code
		reason string
	}{
		"none":    {nil, connect.CodeUnauthenticated, "unauthenticated"},
		"garbage": {[]connect.ClientOption{withKey("avb_nope")}, connect.CodeUnauthenticated, "invalid_api_key"},
		"revoked": {[]connect.ClientOption{withKey(revoked["secret"].(string))}, connect.CodeUnauthenticated, "api_key_revoked"},
		"scope":   {[]connect.ClientOption{withKey(billing)}, connect.CodePermissionDenied, "permission_denied"},
	}
	for name, c := range cases {
		client := avbv1connect.NewVoiceServiceClient(h2c(), p.base, append(c.opts, connect.WithGRPC())...)
		stream := client.Converse(context.Background())
		_ = stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Start{Start: &avbv1.SessionStart{Config: callConfig}}})
		_ = stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Audio{Audio: &avbv1.AudioAppend{Audio: make([]byte, 640)}}})
		_, err := stream.Receive()
		if connect.CodeOf(err) != c.code || apierror.Reason(err) != c.reason {
			t.Fatalf("%s: %v (%s)", name, err, apierror.Reason(err))
		}
		_ = stream.CloseRequest()
	}
	var n int
	if err := ownerDB(t, p.owner).QueryRow(context.Background(), "SELECT count(*) FROM sessions").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d sessions created by refused streams (%v)", n, err)
	}
}

// Too-large frames and faster-than-real-time audio end the stream with
// resource_exhausted; the session ends in error.
func TestVoiceStreamLimits(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("limits", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))["secret"].(string)
	client := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))
	for name, c := range map[string]struct {
		chunk, count int
		reason       string
	}{
		"frame too large": {70 << 10, 1, "audio_frame_too_large"},
		// A minute of loud noise at once. The time the server took to open
		// the call is allowed as backlog (a real-time caller sent that much
		// meanwhile); under load that can be seconds, so the burst is far
		// beyond any of it.
		"too fast": {32000, 60, "audio_too_fast"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		stream := client.Converse(ctx)
		_ = stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Start{Start: &avbv1.SessionStart{Config: callConfig}}})
		for range c.count {
			// Noise, not silence: the call must work on it (speech detection and
			// recognition), so it cannot keep up with a burst. Silence it could.
			if stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Audio{Audio: &avbv1.AudioAppend{Audio: noiseBytes(c.chunk)}}}) != nil {
				break
			}
		}
		var err error
		for err == nil {
			_, err = stream.Receive()
		}
		if connect.CodeOf(err) != connect.CodeResourceExhausted || apierror.Reason(err) != c.reason {
			t.Fatalf("%s: %v (%s)", name, err, apierror.Reason(err))
		}
	}
}

// noiseBytes is n bytes of loud pseudo-random pcm16.
func noiseBytes(n int) []byte {
	b := make([]byte, n)
	x := uint32(1)
	for i := 0; i+1 < n; i += 2 {
		x = x*1664525 + 1013904223
		v := int16(x>>16) / 2
		b[i], b[i+1] = byte(v), byte(v>>8)
	}
	return b
}

// The browser path: ConverseEvents streams events while SendAudio and
// SendControl feed the same session, and the call goes as on Converse.
func TestBrowserPath(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("browser", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))["secret"].(string)
	sessions := avbv1connect.NewSessionServiceClient(http.DefaultClient, p.base, withKey(key))
	created, err := sessions.CreateSession(context.Background(), connect.NewRequest(&avbv1.CreateSessionRequest{Config: callConfig}))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.GetSession().GetId()
	// The page's own server mints a client token for this session with its API key...
	server := avbv1connect.NewVoiceServiceClient(http.DefaultClient, p.base, withKey(key))
	minted, err := server.CreateClientToken(context.Background(), connect.NewRequest(&avbv1.CreateClientTokenRequest{SessionId: id, TtlSeconds: 120}))
	if err != nil {
		t.Fatal(err)
	}
	tok := minted.Msg.GetToken()
	// ...and the token can do nothing else: no other RPC, no other session.
	wantErr(t, p.call("/avb.v1.TenantService/GetTenant", "{}", bearer(tok)...), 403, "permission_denied", "permission_denied")
	wantErr(t, p.call("/avb.v1.VoiceService/SendAudio", `{"sessionId":"`+ten.ID.String()+`"}`, bearer(tok)...), 403, "permission_denied", "permission_denied")
	wantErr(t, p.call("/avb.v1.VoiceService/SendAudio", `{"sessionId":"`+id+`"}`, bearer(tok[:len(tok)-2]+"xx")...), 401, "unauthenticated", "invalid_token")
	// Browsers speak Connect over HTTP/1.1 or HTTP/2 with fetch: server streams and unary calls only.
	client := avbv1connect.NewVoiceServiceClient(http.DefaultClient, p.base, connect.WithInterceptors(bearerInterceptor(tok)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	events, err := client.ConverseEvents(ctx, connect.NewRequest(&avbv1.ConverseEventsRequest{Start: &avbv1.SessionStart{SessionId: id}}))
	if err != nil {
		t.Fatal(err)
	}
	if !events.Receive() || events.Msg().GetEvent().GetSessionStarted() == nil {
		t.Fatalf("first event: %v %v", events.Msg(), events.Err())
	}
	go func() {
		b := spoken(t, ask, 800)
		for i := 0; i < len(b); i += 3200 { // 100 ms per request
			if _, err := client.SendAudio(ctx, connect.NewRequest(&avbv1.SendAudioRequest{SessionId: id, Audio: b[i:min(i+3200, len(b))]})); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	var final string
	var out []byte
	for events.Receive() {
		switch ev := events.Msg().GetEvent().GetEvent().(type) {
		case *avbv1.VoiceEvent_TranscriptFinal:
			final = ev.TranscriptFinal.GetText()
		case *avbv1.VoiceEvent_ResponseAudioDelta:
			out = append(out, ev.ResponseAudioDelta.GetAudio()...)
		case *avbv1.VoiceEvent_ResponseDone:
			if _, err := client.SendControl(ctx, connect.NewRequest(&avbv1.SendControlRequest{SessionId: id,
				Control: &avbv1.ClientControl{Control: &avbv1.ClientControl_End{End: &avbv1.SessionEnd{}}}})); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := events.Err(); err != nil {
		t.Fatalf("events ended with %v", err)
	}
	if final != ask || heard(t, out) != replyHints[0] {
		t.Fatalf("heard %q, reply says %q", final, heard(t, out))
	}
	res, err := sessions.GetSession(context.Background(), connect.NewRequest(&avbv1.GetSessionRequest{SessionId: id}))
	if err != nil || res.Msg.GetSession().GetStatus() != avbv1.SessionStatus_SESSION_STATUS_COMPLETED {
		t.Fatalf("session %v %v", res.Msg.GetSession().GetStatus(), err)
	}
	_, err = client.SendAudio(ctx, connect.NewRequest(&avbv1.SendAudioRequest{SessionId: id, Audio: make([]byte, 640)}))
	if apierror.Reason(err) != "session_not_live" {
		t.Fatalf("audio to an ended session: %v", err)
	}
}

// TestVoiceLatency measures end of speech -> first audio byte at the client
// with and without session workflows, turns interleaved on two platforms in
// one run (set AVB_MEASURE=1; it takes a few minutes).
func TestVoiceLatency(t *testing.T) {
	if os.Getenv("AVB_MEASURE") == "" {
		t.Skip("set AVB_MEASURE=1 to measure")
	}
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	temporal := testenv.Temporal(t)
	type side struct {
		name                 string
		client               avbv1connect.VoiceServiceClient
		client_, server, opn []float64
	}
	var sides []*side
	for _, wf := range []bool{false, true} {
		p := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), map[string]string{
			"AVB_TEMPORAL_ADDRESS": temporal, "AVB_SESSION_WORKFLOWS": fmt.Sprint(wf), "AVB_RUN_WORKER": fmt.Sprint(wf)}), issuer, owner)
		ten := p.tenant(fmt.Sprintf("lat%v", wf), store.TierPro)
		admin := p.token(fmt.Sprintf("ada%v", wf), ten.ID.String(), "admin")
		key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))["secret"].(string)
		name := "without workflows"
		if wf {
			name = "with workflows"
		}
		sides = append(sides, &side{name: name, client: avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))})
	}
	for i := range 40 {
		sd := sides[i%2]
		tr := converse(t, sd.client, 20*time.Millisecond)
		sd.client_ = append(sd.client_, float64(tr.stopToAudio.Microseconds())/1000)
		sd.server = append(sd.server, tr.done.GetLatency().GetFirstByteMs())
		sd.opn = append(sd.opn, float64(tr.open.Microseconds())/1000)
	}
	pct := func(v []float64, q float64) float64 {
		s := slices.Clone(v)
		sort.Float64s(s)
		return s[int(q*float64(len(s)-1))]
	}
	for _, sd := range sides {
		fmt.Printf("[%s] end of speech -> first audio byte, client: p50 %.2f ms p95 %.2f ms; server part: p50 %.2f ms p95 %.2f ms; session open p50 %.2f ms p95 %.2f ms\n",
			sd.name, pct(sd.client_, .5), pct(sd.client_, .95), pct(sd.server, .5), pct(sd.server, .95), pct(sd.opn, .5), pct(sd.opn, .95))
	}
}

// Synthesize and Transcribe alone: the speech Synthesize produces, streamed
// into Transcribe, comes back as the same words.
func TestSynthesizeThenTranscribe(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("speech", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))["secret"].(string)
	client := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))
	ctx := context.Background()

	pcm16k := &avbv1.AudioFormat{Encoding: avbv1.AudioEncoding_AUDIO_ENCODING_PCM16, SampleRate: 16000}
	syn, err := client.Synthesize(ctx, connect.NewRequest(&avbv1.SynthesizeRequest{Text: ask, OutputAudioFormat: pcm16k}))
	if err != nil {
		t.Fatal(err)
	}
	var speech []byte
	chunks := 0
	for syn.Receive() {
		speech = append(speech, syn.Msg().GetAudio()...)
		chunks++
	}
	if err := syn.Err(); err != nil || chunks < 5 {
		t.Fatalf("%d chunks: %v", chunks, err)
	}
	speech = append(speech, make([]byte, 32000)...) // a second of silence

	tr := client.Transcribe(ctx)
	if err := tr.Send(&avbv1.TranscribeRequest{Message: &avbv1.TranscribeRequest_Config{Config: &avbv1.TranscribeConfig{
		InputAudioFormat: pcm16k, PhraseHints: callConfig.GetPhraseHints()}}}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for i := 0; i < len(speech); i += 3200 {
			if tr.Send(&avbv1.TranscribeRequest{Message: &avbv1.TranscribeRequest_Audio{Audio: speech[i:min(i+3200, len(speech))]}}) != nil {
				return
			}
		}
		_ = tr.CloseRequest()
	}()
	var finals []string
	partials := 0
	for {
		msg, err := tr.Receive()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if msg.GetIsFinal() {
			finals = append(finals, msg.GetText())
		} else {
			partials++
		}
	}
	if !slices.Equal(finals, []string{ask}) || partials == 0 {
		t.Fatalf("finals %q, %d partials", finals, partials)
	}
	empty, err := client.Synthesize(ctx, connect.NewRequest(&avbv1.SynthesizeRequest{Text: ""}))
	if err == nil {
		for empty.Receive() {
		}
		err = empty.Err()
	}
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("empty text: %v", err)
	}
}

// bearerInterceptor sends a bearer token on every request and stream.
type bearerInterceptor string

func (b bearerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// TerminateSession ends a live call wherever it runs: the stream closes with
// aborted/session_not_live and the session is terminated with its metrics.
// Tenant voice defaults fill what a session leaves unset.
func TestTerminateLiveSessionAndTenantDefaults(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("term", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))["secret"].(string)
	client := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))
	sessions := avbv1connect.NewSessionServiceClient(http.DefaultClient, p.base, withKey(key))

	stream := client.Converse(context.Background())
	_ = stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Start{Start: &avbv1.SessionStart{Config: callConfig}}})
	msg, err := stream.Receive()
	if err != nil {
		t.Fatal(err)
	}
	id := msg.GetEvent().GetSessionStarted().GetSession().GetId()
	for range 25 { // half a second of silence
		_ = stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Audio{Audio: &avbv1.AudioAppend{Audio: make([]byte, 640)}}})
	}
	time.Sleep(100 * time.Millisecond)
	res, err := sessions.TerminateSession(context.Background(), connect.NewRequest(&avbv1.TerminateSessionRequest{SessionId: id}))
	if err != nil {
		t.Fatal(err)
	}
	if s := res.Msg.GetSession(); s.GetStatus() != avbv1.SessionStatus_SESSION_STATUS_TERMINATED || s.GetMetrics().GetInputAudioSeconds() < 0.4 {
		t.Fatalf("terminated session: %v %v", s.GetStatus(), s.GetMetrics())
	}
	for err == nil {
		_, err = stream.Receive()
	}
	if connect.CodeOf(err) != connect.CodeAborted || apierror.Reason(err) != "session_not_live" {
		t.Fatalf("stream ended with %v (%s)", err, apierror.Reason(err))
	}

	// The tenant's default model applies to sessions that name none.
	wantOK(t, p.call("/avb.v1.TenantService/UpdateTenantSettings", `{"settings":{"voiceDefaults":{"model":"no-such-model"}}}`, bearer(admin)...))
	stream = client.Converse(context.Background())
	_ = stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Start{Start: &avbv1.SessionStart{Config: callConfig}}})
	if _, err := stream.Receive(); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("unknown default model: %v", err)
	}
}

// Shutdown gives an open call the stream drain time, then ends it with
// unavailable/server_shutting_down so the client reconnects elsewhere.
func TestShutdownDrainsOpenStreams(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("drain", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))["secret"].(string)
	client := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))
	stream := client.Converse(context.Background())
	_ = stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Start{Start: &avbv1.SessionStart{Config: callConfig}}})
	if _, err := stream.Receive(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	go p.stop()
	var err error
	for err == nil {
		_, err = stream.Receive()
	}
	waited := time.Since(start)
	if connect.CodeOf(err) != connect.CodeUnavailable || apierror.Reason(err) != "server_shutting_down" {
		t.Fatalf("stream ended with %v (%s)", err, apierror.Reason(err))
	}
	if drain := p.cfg.HTTP.StreamDrainTimeout; waited < drain-100*time.Millisecond || waited > drain+2*time.Second {
		t.Fatalf("stream ended %s after shutdown began; the drain time is %s", waited, drain)
	}
}

// The per-stage turn latency reaches /metrics for uninterrupted turns.
func TestTurnLatencyMetrics(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("metrics", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))["secret"].(string)
	converse(t, avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key)), 5*time.Millisecond)
	res, err := http.Get(p.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	for _, want := range []string{`voice_turn_latency_seconds_count{stage="first_byte"} 1`, `voice_turn_latency_seconds_count{stage="stt_final"} 1`, `sessions_total{status="completed"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// A session that sets no phrase hints and is answered by the scripted model
// listens for what that model understands: the first call a newcomer makes
// is heard right, and the session says what its recognition can hear.
func TestRecognitionListensForTheScriptedModel(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("hints", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))["secret"].(string)
	client := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))
	tr := converseTurn(t, client, &avbv1.SessionStart{Config: &avbv1.SessionConfig{}}, 5*time.Millisecond,
		func(ev *avbv1.VoiceEvent, _ func(*avbv1.ClientControl)) {
			if e := ev.GetError(); e != nil {
				t.Fatalf("error event: %v", e)
			}
		})
	if tr.final != ask || !strings.Contains(tr.reply, "booked the meeting") {
		t.Fatalf("heard %q, answered %q", tr.final, tr.reply)
	}
	rec := tr.events[0].GetSessionStarted().GetRecognition()
	if rec.GetEngine() != "embedded" || !rec.GetPhrasesOnly() || !rec.GetFromModel() || rec.GetPhrases() < 50 || len(rec.GetExamples()) == 0 {
		t.Fatalf("recognition %v", rec)
	}
	// A session with its own hints keeps them.
	tr = converseIn(t, client, 5*time.Millisecond, "")
	if rec := tr.events[0].GetSessionStarted().GetRecognition(); rec.GetFromModel() || rec.GetPhrases() != int32(len(callConfig.PhraseHints)) {
		t.Fatalf("recognition with hints %v", rec)
	}
}
