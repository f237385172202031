package app_test

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/signature"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/voice/audio"
)

// converseTools says the request into a session in real time and lets
// answer act on each event (error events included) until the reply is done.
func converseTools(t testing.TB, client avbv1connect.VoiceServiceClient, start *avbv1.SessionStart,
	answer func(ev *avbv1.VoiceEvent, send func(*avbv1.ClientControl))) turn {
	t.Helper()
	return converseTurn(t, client, start, 20*time.Millisecond, answer)
}

// recognized is what pocketsphinx hears in 24 kHz reply audio, among phrases.
func recognized(t testing.TB, pcm24k []byte, phrases ...string) string {
	t.Helper()
	s, _ := audio.Decode(audio.Format{Encoding: audio.PCM16, SampleRate: 24000}, pcm24k, nil)
	return recognized16(t, audio.NewResampler(24000, 16000).Process(s, nil), phrases...)
}

const bookMeetingTool = `{"name":"book_meeting","description":"Books a meeting.","kind":"TOOL_KIND_CLIENT","timeoutMs":5000,
	"parameters":{"type":"object","properties":{"day":{"type":"string"},"time":{"type":"string","pattern":"^[0-9]{2}:[0-9]{2}$"}},"required":["day","time"]}}`

// A persona's client tool over Converse: "please book a meeting for
// tomorrow at ten" makes the scripted model call book_meeting with
// {"day":"tomorrow","time":"10:00"}; a result for no open call is an error
// event and the call goes on; the client's answer is what the agent says.
// The call and its result are recorded, and counted in the session.
// Personas whose tools do not compile, or call a refused address, are
// refused with the field at fault.
func TestClientToolOverConverse(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("tools", store.TierPro)
	admin := bearer(p.token("ada", ten.ID.String(), "admin"))
	for field, tool := range map[string]string{
		"persona.tools[0].parameters": `{"name":"t","parameters":{"type":"nope"}}`,
		"persona.tools[0].url":        `{"name":"t","kind":"TOOL_KIND_WEBHOOK","url":"http://169.254.169.254/latest/meta-data"}`,
	} {
		r := p.call("/avb.v1.PersonaService/CreatePersona", `{"persona":{"name":"bad","tools":[`+tool+`]}}`, admin...)
		wantErr(t, r, http.StatusBadRequest, "invalid_argument", "validation_failed")
		if !strings.Contains(r.raw, field) {
			t.Fatalf("%s not named: %s", field, r.raw)
		}
	}
	persona := wantOK(t, p.call("/avb.v1.PersonaService/CreatePersona", `{"persona":{"name":"booker","tools":[`+bookMeetingTool+`]}}`, admin...))
	sess := wantOK(t, p.call("/avb.v1.SessionService/CreateSession", fmt.Sprintf(`{"personaId":%q,"config":{"phraseHints":[%q,"hello"]}}`,
		str(persona, "persona", "id"), ask), admin...))
	key, _ := p.realtimeKey(ten)
	client := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))
	const say = "Booked for tomorrow at ten in room four."
	var args string
	var notOpen bool
	tr := converseTools(t, client, &avbv1.SessionStart{SessionId: str(sess, "session", "id")}, func(ev *avbv1.VoiceEvent, send func(*avbv1.ClientControl)) {
		if c := ev.GetToolCall(); c != nil {
			args = c.GetArguments()
			send(&avbv1.ClientControl{Control: &avbv1.ClientControl_ToolResult{ToolResult: &avbv1.ToolResult{CallId: "call_nobody_asked", Output: "x"}}})
			send(&avbv1.ClientControl{Control: &avbv1.ClientControl_ToolResult{ToolResult: &avbv1.ToolResult{CallId: c.GetCallId(), Output: `{"say":"` + say + `"}`}}})
		}
		if e := ev.GetError(); e != nil {
			notOpen = notOpen || e.GetReason() == "tool_call_not_open"
		}
	})
	if args != `{"day":"tomorrow","time":"10:00"}` || !notOpen {
		t.Fatalf("arguments %s, unknown call refused %v", args, notOpen)
	}
	if tr.reply != say || tr.done.GetLatency().GetToolMs() <= 0 {
		t.Fatalf("reply %q latency %v", tr.reply, tr.done.GetLatency())
	}
	if got := recognized(t, tr.audio, "booked for tomorrow at ten in room four", "sure i booked the meeting for tomorrow at ten", "hello how can i help you today"); got != "booked for tomorrow at ten in room four" {
		t.Fatalf("the reply audio says %q", got)
	}
	sessions := avbv1connect.NewSessionServiceClient(http.DefaultClient, p.base, withKey(key))
	got, evs := endedSession(t, sessions, tr.sessionID)
	if got.GetMetrics().GetToolCalls() != 1 {
		t.Fatalf("metrics %v", got.GetMetrics())
	}
	var types []string
	for _, e := range evs {
		types = append(types, e.GetType())
		if e.GetType() == "tool_result" && (e.GetData().GetFields()["outcome"].GetStringValue() != "ok" || !strings.Contains(e.GetData().GetFields()["result"].GetStringValue(), "room four")) {
			t.Fatalf("recorded result %v", e.GetData())
		}
	}
	for _, want := range []string{"tool_call", "tool_result", "response"} {
		if !slices.Contains(types, want) {
			t.Fatalf("stored events %v", types)
		}
	}
}

// hookServer is a tool server on loopback HTTPS that verifies avb's
// signature with the secret it is given, and answers book_meeting.
func hookServer(t *testing.T) (srv *httptest.Server, caFile string, secret *atomic.Value, calls, bad *atomic.Int32) {
	secret = &atomic.Value{}
	secret.Store("")
	calls, bad = &atomic.Int32{}, &atomic.Int32{}
	replays := &signature.Replays{}
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		v := signature.Verifier{Secret: secret.Load().(string), Tolerance: 5 * time.Minute, Replays: replays}
		if err := v.Verify(r.Header.Get(signature.Header), body); err != nil {
			bad.Add(1)
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		calls.Add(1)
		if !strings.Contains(string(body), `"arguments":{"day":"tomorrow","time":"10:00"}`) || r.Header.Get("Idempotency-Key") == "" {
			http.Error(w, "unexpected call "+string(body), http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, `{"say":"Booked for tomorrow at ten in room four."}`)
	}))
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, caFile, secret, calls, bad
}

// A webhook tool: avb POSTs the call to an HTTPS server (loopback, allowed
// for the test) signed with the tenant's rotated secret, which the server
// verifies as the README shows; its answer is what the agent says.
func TestWebhookToolSignedOverConverse(t *testing.T) {
	t.Parallel()
	srv, ca, secret, calls, bad := hookServer(t)
	p, _ := vaultPlatform(t, testenv.VaultOptions{Transit: true, Secrets: map[string]any{"openai_api_key": "sk"}},
		map[string]string{"AVB_TOOLS_EGRESS_ALLOW": "127.0.0.1", "AVB_TOOLS_CA_FILE": ca, "AVB_TOOLS_REQUIRE_HTTPS": "true"}, &testenv.LogBuffer{})
	ten := p.tenant("hooks", store.TierPro)
	admin := bearer(p.token("ada", ten.ID.String(), "admin"))
	first := wantOK(t, p.call("/avb.v1.TenantService/RotateTenantSecret", `{"name":"webhook_signing_secret"}`, admin...))
	rotated := wantOK(t, p.call("/avb.v1.TenantService/RotateTenantSecret", `{"name":"webhook_signing_secret"}`, admin...))
	value := str(rotated, "value")
	if !strings.HasPrefix(value, "whsec_") || value == str(first, "value") || rotated["previousExpireTime"] == nil {
		t.Fatalf("rotated %v", rotated)
	}
	secret.Store(value)
	// http is refused under AVB_TOOLS_REQUIRE_HTTPS, as in prod.
	r := p.call("/avb.v1.PersonaService/CreatePersona", `{"persona":{"name":"plain","tools":[{"name":"t","kind":"TOOL_KIND_WEBHOOK","url":"http://example.com/hook"}]}}`, admin...)
	wantErr(t, r, http.StatusBadRequest, "invalid_argument", "validation_failed")

	key, _ := p.realtimeKey(ten)
	client := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))
	cfg := &avbv1.SessionConfig{PhraseHints: []string{ask, "hello"}, Tools: []*avbv1.Tool{{Name: "book_meeting",
		Kind: avbv1.ToolKind_TOOL_KIND_WEBHOOK, Url: srv.URL + "/tools/book", TimeoutMs: 5000}}}
	tr := converseTools(t, client, &avbv1.SessionStart{Config: cfg}, nil)
	if tr.reply != "Booked for tomorrow at ten in room four." || calls.Load() != 1 || bad.Load() != 0 {
		t.Fatalf("reply %q, %d verified calls, %d refused", tr.reply, calls.Load(), bad.Load())
	}
	var outcome string
	for _, ev := range tr.events {
		if d := ev.GetToolCallDone(); d != nil {
			outcome = d.GetOutcome()
		}
	}
	if outcome != "ok" {
		t.Fatalf("outcome %q", outcome)
	}
}

// What a tool round trip adds to a turn, measured in one run on one
// platform: the same request answered without a tool, with a client tool
// answered at once over the same Converse stream, and with a webhook tool
// on loopback HTTPS. Turns alternate between the three, so load on the
// machine hits all alike. A measurement, run with AVB_MEASURE=1.
func TestToolRoundTripCost(t *testing.T) {
	if os.Getenv("AVB_MEASURE") == "" {
		t.Skip("a measurement: run with AVB_MEASURE=1")
	}
	srv, ca, secret, _, _ := hookServer(t)
	p, _ := vaultPlatform(t, testenv.VaultOptions{Transit: true, Secrets: map[string]any{"openai_api_key": "sk"}},
		map[string]string{"AVB_TOOLS_EGRESS_ALLOW": "127.0.0.1", "AVB_TOOLS_CA_FILE": ca, "AVB_LOG_LEVEL": "error"}, &testenv.LogBuffer{})
	ten := p.tenant("measure", store.TierPro)
	admin := bearer(p.token("ada", ten.ID.String(), "admin"))
	secret.Store(str(wantOK(t, p.call("/avb.v1.TenantService/RotateTenantSecret", `{"name":"webhook_signing_secret"}`, admin...)), "value"))
	key, _ := p.realtimeKey(ten)
	client := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))
	hints := []string{ask, "hello"}
	variants := []struct {
		name  string
		tools []*avbv1.Tool
	}{
		{"none", nil},
		{"client", []*avbv1.Tool{{Name: "book_meeting", Kind: avbv1.ToolKind_TOOL_KIND_CLIENT}}},
		{"webhook", []*avbv1.Tool{{Name: "book_meeting", Kind: avbv1.ToolKind_TOOL_KIND_WEBHOOK, Url: srv.URL + "/book"}}},
	}
	answer := func(ev *avbv1.VoiceEvent, send func(*avbv1.ClientControl)) {
		if c := ev.GetToolCall(); c != nil && c.GetKind() == avbv1.ToolKind_TOOL_KIND_CLIENT {
			send(&avbv1.ClientControl{Control: &avbv1.ClientControl_ToolResult{ToolResult: &avbv1.ToolResult{CallId: c.GetCallId(),
				Output: `{"say":"Booked for tomorrow at ten in room four."}`}}})
		}
	}
	const rounds = 7
	client2first := map[string][]time.Duration{}
	server2first := map[string][]float64{}
	toolMS := map[string][]float64{}
	for range rounds {
		for _, v := range variants {
			tr := converseTools(t, client, &avbv1.SessionStart{Config: &avbv1.SessionConfig{PhraseHints: hints, Tools: v.tools}}, answer)
			if tr.done.GetInterrupted() || len(tr.audio) == 0 {
				t.Fatalf("%s: reply %q", v.name, tr.reply)
			}
			client2first[v.name] = append(client2first[v.name], tr.stopToAudio)
			server2first[v.name] = append(server2first[v.name], tr.done.GetLatency().GetFirstByteMs())
			toolMS[v.name] = append(toolMS[v.name], tr.done.GetLatency().GetToolMs())
		}
	}
	median := func(xs []float64) float64 { slices.Sort(xs); return xs[len(xs)/2] }
	base := median(server2first["none"])
	for _, v := range variants {
		var c []float64
		for _, d := range client2first[v.name] {
			c = append(c, float64(d.Microseconds())/1000)
		}
		s := median(server2first[v.name])
		t.Logf("%-8s end of speech -> first reply byte: server median %.1f ms (x%.2f of none, +%.1f ms), client median %.1f ms, tool stage median %.1f ms (%d turns)",
			v.name, s, s/base, s-base, median(c), median(toolMS[v.name]), rounds)
	}
}

// While a client tool runs past the persona's filler delay the agent says
// the filler; the caller then speaks: the pending call is cancelled (the
// client is told), a late result is refused, and the new words are
// answered. A tool nobody answers times out; arguments the tool's schema
// refuses never reach the client.
func TestToolFillerBargeInAndTimeout(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("filler", store.TierPro)
	key, _ := p.realtimeKey(ten)
	client := avbv1connect.NewVoiceServiceClient(h2c(), p.base, connect.WithGRPC(), withKey(key))
	hints := []string{ask, "hello"}
	book := func(timeoutMS int32, params string) []*avbv1.Tool {
		tl := &avbv1.Tool{Name: "book_meeting", TimeoutMs: timeoutMS}
		if params != "" {
			tl.Parameters = &structpb.Struct{}
			if err := protojson.Unmarshal([]byte(params), tl.Parameters); err != nil {
				t.Fatal(err)
			}
		}
		return []*avbv1.Tool{tl}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	stream := client.Converse(ctx)
	cfg := &avbv1.SessionConfig{PhraseHints: hints, Tools: book(20000, ""), ToolFiller: "One moment please.", ToolFillerDelayMs: 300}
	if err := stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Start{Start: &avbv1.SessionStart{Config: cfg}}}); err != nil {
		t.Fatal(err)
	}
	say := func(text string) {
		b := spoken(t, text, 800)
		for i := 0; i < len(b); i += 640 {
			if stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Audio{Audio: &avbv1.AudioAppend{Audio: b[i:min(i+640, len(b))]}}}) != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	go say(ask)
	var callID, text string
	var cancelled, interrupted bool
	for done := 0; done < 2; {
		msg, err := stream.Receive()
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		switch e := msg.GetEvent().GetEvent().(type) {
		case *avbv1.VoiceEvent_ToolCall:
			callID = e.ToolCall.GetCallId()
		case *avbv1.VoiceEvent_ResponseTextDelta:
			text += e.ResponseTextDelta.GetText()
			if strings.Contains(text, "One moment please.") && callID != "" && !cancelled {
				go say("hello") // the caller talks over the filler
			}
		case *avbv1.VoiceEvent_ToolCallDone:
			cancelled = e.ToolCallDone.GetOutcome() == "cancelled" && e.ToolCallDone.GetCallId() == callID
			// The result arrives too late: refused, the call goes on.
			_ = stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Control{Control: &avbv1.ClientControl{
				Control: &avbv1.ClientControl_ToolResult{ToolResult: &avbv1.ToolResult{CallId: callID, Output: "late"}}}}})
		case *avbv1.VoiceEvent_ResponseDone:
			done++
			if done == 1 {
				interrupted = e.ResponseDone.GetInterrupted()
			} else if e.ResponseDone.GetText() != "Hello. How can I help you today?" {
				t.Fatalf("second reply %q", e.ResponseDone.GetText())
			}
		}
	}
	_ = stream.CloseRequest()
	if !cancelled || !interrupted || !strings.HasPrefix(text, "One moment please.") {
		t.Fatalf("cancelled %v, interrupted %v, said %q", cancelled, interrupted, text)
	}

	var outcomes []string
	record := func(ev *avbv1.VoiceEvent, _ func(*avbv1.ClientControl)) {
		if d := ev.GetToolCallDone(); d != nil {
			outcomes = append(outcomes, d.GetOutcome())
		}
		if ev.GetToolCall() != nil && len(outcomes) > 0 {
			t.Error("a tool call reached the client after")
		}
	}
	tr := converseTools(t, client, &avbv1.SessionStart{Config: &avbv1.SessionConfig{PhraseHints: hints, Tools: book(300, "")}}, record)
	if !slices.Equal(outcomes, []string{"timeout"}) || tr.reply != "Sorry, that did not work." {
		t.Fatalf("timeout: outcomes %v, reply %q", outcomes, tr.reply)
	}
	outcomes = nil
	strict := `{"type":"object","properties":{"time":{"type":"string","pattern":"^[0-9]{1}h$"}},"required":["time"]}`
	tr = converseTools(t, client, &avbv1.SessionStart{Config: &avbv1.SessionConfig{PhraseHints: hints, Tools: book(5000, strict)}},
		func(ev *avbv1.VoiceEvent, send func(*avbv1.ClientControl)) {
			if ev.GetToolCall() != nil {
				t.Error("invalid arguments reached the client")
			}
			record(ev, send)
		})
	if !slices.Equal(outcomes, []string{"invalid_arguments"}) || tr.reply != "Sorry, that did not work." {
		t.Fatalf("invalid arguments: outcomes %v, reply %q", outcomes, tr.reply)
	}
}

// The README's webhook receivers are the ones the tests run, word for word.
func TestReadmeWebhookReceivers(t *testing.T) {
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"platform/signature/example_test.go", "sdk/ts/test/webhook.test.ts"} {
		src, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		_, rest, ok := strings.Cut(string(src), "// receiver:start\n")
		body, _, ok2 := strings.Cut(rest, "// receiver:end")
		if !ok || !ok2 {
			t.Fatalf("%s has no receiver markers", f)
		}
		var lines []string
		for _, l := range strings.Split(strings.TrimRight(body, " \n"), "\n") {
			if strings.HasSuffix(f, ".ts") {
				l = strings.TrimPrefix(l, "  ")
			}
			lines = append(lines, l)
		}
		if snippet := strings.Join(lines, "\n"); !strings.Contains(string(readme), snippet) {
			t.Errorf("README.md does not show the receiver of %s:\n%s", f, snippet)
		}
	}
}
