package voice_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/voice"
	"github.com/agentvoicebox/avb/voice/llm"
	"github.com/agentvoicebox/avb/voice/tools"
)

var bookMeeting = json.RawMessage(`{"type":"object","properties":{"day":{"type":"string","enum":["today","tomorrow"]},"time":{"type":"string","pattern":"^[0-9]{2}:[0-9]{2}$"}},"required":["day","time"],"additionalProperties":false}`)

func tool(t testing.TB, tl tools.Tool) tools.Tool {
	t.Helper()
	if tl.Parameters == nil && tl.Name == "book_meeting" {
		tl.Parameters = bookMeeting
	}
	out, err := tools.New(tl)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// toolCall runs one turn saying what: the model is prov's, the recognizer
// hears what; answer is called for each event until the reply is done
// (and, for end_call, the call's end).
func toolCall(t *testing.T, conf voice.Config, prov voice.Providers, what string, answer func(*voice.Call, voice.Event)) []voice.Event {
	t.Helper()
	prov.STT = &scriptedSTT{finals: []string{what}}
	c, err := voice.New(context.Background(), conf, prov)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go stream(t, c, pcm16k, pcm(t, noise(400), make([]int16, 16000)), 2)
	var evs []voice.Event
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev := <-c.Events():
			evs = append(evs, ev)
			if answer != nil {
				answer(c, ev)
			}
			if ev.Type == voice.ResponseDone && !hasTool(conf, "end_call") || ev.Type == voice.EndRequested {
				return evs
			}
		case <-timeout:
			t.Fatalf("no reply: %v", types(evs))
		}
	}
}

func hasTool(conf voice.Config, name string) bool {
	for _, tl := range conf.Tools {
		if tl.Name == name {
			return true
		}
	}
	return false
}

func toolConf(ts ...tools.Tool) voice.Config {
	c := cfg(pcm16k, pcm16k)
	c.Tools = ts
	return c
}

func all(evs []voice.Event, typ voice.EventType) []voice.Event {
	var out []voice.Event
	for _, ev := range evs {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// The scripted model calls book_meeting with the day and time the caller
// said; the client's result goes back to the model, which says it.
func TestClientToolRoundTrip(t *testing.T) {
	t.Parallel()
	conf := toolConf(tool(t, tools.Tool{Name: "book_meeting", Kind: tools.Client}))
	evs := toolCall(t, conf, providers(t, llm.DefaultScript), ask, func(c *voice.Call, ev voice.Event) {
		if ev.Type == voice.ToolCallStarted {
			if err := c.ToolResult(ev.Tool.ID, `{"say":"Booked for tomorrow at ten in room four."}`, false); err != nil {
				t.Error(err)
			}
		}
	})
	started := all(evs, voice.ToolCallStarted)
	if len(started) != 1 || started[0].Tool.Name != "book_meeting" || started[0].Tool.Arguments != `{"day":"tomorrow","time":"10:00"}` {
		t.Fatalf("tool calls %+v", started)
	}
	done := all(evs, voice.ToolCallDone)
	if len(done) != 1 || done[0].Tool.Outcome != tools.OutcomeOK || done[0].Tool.ID != started[0].Tool.ID {
		t.Fatalf("tool results %+v", done)
	}
	_, rd := first(evs, voice.ResponseDone)
	if rd.Text != "Booked for tomorrow at ten in room four." || len(all(evs, voice.AudioDelta)) == 0 {
		t.Fatalf("reply %q", rd.Text)
	}
	if rd.Metrics.ToolCalls != 1 || rd.Metrics.Tool <= 0 || rd.Metrics.Tool > rd.Metrics.FirstByteSent {
		t.Fatalf("metrics %+v", rd.Metrics)
	}
}

// parallelModel asks for every tool at once, then reads the results back.
type parallelModel struct {
	mu   sync.Mutex
	seen [][]llm.Message
}

func (m *parallelModel) Stream(ctx context.Context, req llm.Request, emit func(string) error) (llm.Usage, error) {
	m.mu.Lock()
	m.seen = append(m.seen, req.Messages)
	m.mu.Unlock()
	last := req.Messages[len(req.Messages)-1]
	if last.Role != "tool" {
		for i := range req.Tools {
			var def struct{ Function struct{ Name string } }
			_ = json.Unmarshal(req.Tools[i], &def)
			req.OnToolCall(llm.ToolCall{ID: "c" + def.Function.Name, Name: def.Function.Name, Arguments: `{}`})
		}
		return llm.Usage{}, nil
	}
	var parts []string
	for _, msg := range req.Messages {
		if msg.Role == "tool" {
			parts = append(parts, msg.Content)
		}
	}
	return llm.Usage{}, emit(strings.Join(parts, " ") + ".")
}

// Tools asked for together run together: both clients' calls are open at
// once, answered in the other order, and the results keep the model's order.
func TestParallelToolCalls(t *testing.T) {
	t.Parallel()
	m := &parallelModel{}
	conf := toolConf(tool(t, tools.Tool{Name: "alpha"}), tool(t, tools.Tool{Name: "beta"}))
	var open []string
	evs := toolCall(t, conf, providers(t, m), "hello", func(c *voice.Call, ev voice.Event) {
		if ev.Type == voice.ToolCallStarted {
			open = append(open, ev.Tool.ID)
			if len(open) == 2 {
				for _, id := range []string{open[1], open[0]} {
					if err := c.ToolResult(id, strings.TrimPrefix(id, "c"), false); err != nil {
						t.Error(err)
					}
				}
			}
		}
	})
	_, rd := first(evs, voice.ResponseDone)
	if rd.Text != "alpha beta." || rd.Metrics.ToolCalls != 2 {
		t.Fatalf("reply %q, %d tool calls", rd.Text, rd.Metrics.ToolCalls)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	second := m.seen[1]
	asked := second[len(second)-3]
	if len(asked.ToolCalls) != 2 || second[len(second)-2].ToolCallID != "calpha" || second[len(second)-1].ToolCallID != "cbeta" {
		t.Fatalf("second request %+v", second)
	}
}

// Arguments that do not match the schema never reach the tool: the model
// gets the error and answers it.
func TestInvalidArgumentsGoBackToTheModel(t *testing.T) {
	t.Parallel()
	conf := toolConf(tool(t, tools.Tool{Name: "book_meeting"}))
	bad := &llm.Scripted{Rules: []llm.Rule{{Match: []string{"book"}, Tool: "book_meeting",
		Arguments: func(string) map[string]any { return map[string]any{"day": "someday"} }}}}
	evs := toolCall(t, conf, providers(t, bad), ask, func(c *voice.Call, ev voice.Event) {
		if ev.Type == voice.ToolCallStarted {
			t.Errorf("invalid arguments reached the client: %+v", ev.Tool)
		}
	})
	done := all(evs, voice.ToolCallDone)
	if len(done) != 1 || done[0].Tool.Outcome != tools.OutcomeInvalid || !strings.Contains(done[0].Tool.Output, "time") {
		t.Fatalf("results %+v", done)
	}
	if _, rd := first(evs, voice.ResponseDone); rd.Text != "Sorry, that did not work." {
		t.Fatalf("reply %q", rd.Text)
	}
}

// A client that never answers: the call times out, the model is told, and
// a result sent afterwards is refused.
func TestToolTimeout(t *testing.T) {
	t.Parallel()
	conf := toolConf(tool(t, tools.Tool{Name: "book_meeting", Timeout: 150 * time.Millisecond}))
	var id string
	evs := toolCall(t, conf, providers(t, llm.DefaultScript), ask, func(c *voice.Call, ev voice.Event) {
		if ev.Type == voice.ToolCallStarted {
			id = ev.Tool.ID
		}
		if ev.Type == voice.ToolCallDone {
			if err := c.ToolResult(id, "late", false); !errors.Is(err, voice.ErrToolCallNotOpen) {
				t.Errorf("late result: %v", err)
			}
		}
	})
	done := all(evs, voice.ToolCallDone)
	if len(done) != 1 || done[0].Tool.Outcome != tools.OutcomeTimeout || done[0].Tool.Latency < 150*time.Millisecond {
		t.Fatalf("results %+v", done)
	}
}

// A slow tool: after the filler delay the persona's filler is said (text
// and audio) while the tool runs; the result follows.
func TestFillerWhileToolRuns(t *testing.T) {
	t.Parallel()
	conf := toolConf(tool(t, tools.Tool{Name: "book_meeting"}))
	conf.Filler, conf.FillerDelay = "One moment please.", 100*time.Millisecond
	evs := toolCall(t, conf, providers(t, llm.DefaultScript), ask, func(c *voice.Call, ev voice.Event) {
		if ev.Type == voice.ToolCallStarted {
			go func() {
				time.Sleep(600 * time.Millisecond)
				_ = c.ToolResult(ev.Tool.ID, "It is booked.", false)
			}()
		}
	})
	i, _ := first(evs, voice.AudioDelta)
	j, _ := first(evs, voice.ToolCallDone)
	if i < 0 || i > j {
		t.Fatalf("no filler audio before the result: %v", types(evs))
	}
	if _, rd := first(evs, voice.ResponseDone); rd.Text != "One moment please. It is booked." {
		t.Fatalf("reply %q", rd.Text)
	}
}

// Barge-in while a tool runs: the call is cancelled (the client is told,
// the tool's context ends), and the caller's new words are answered.
func TestBargeInCancelsToolCall(t *testing.T) {
	t.Parallel()
	run := &blockingRunner{started: make(chan struct{})}
	conf := toolConf(tool(t, tools.Tool{Name: "book_meeting", Kind: tools.Webhook}))
	conf.Filler = "One moment please."
	conf.FillerDelay = 50 * time.Millisecond
	prov := providers(t, llm.DefaultScript)
	prov.Tools = run
	prov.STT = &scriptedSTT{finals: []string{ask, "hello"}}
	c, err := voice.New(context.Background(), conf, prov)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go stream(t, c, pcm16k, pcm(t, noise(400), make([]int16, 16000)), 2)
	var evs []voice.Event
	timeout := time.After(30 * time.Second)
	dones := 0
	for dones < 2 {
		select {
		case ev := <-c.Events():
			evs = append(evs, ev)
			if ev.Type == voice.AudioDelta && dones == 0 && len(all(evs, voice.AudioDelta)) == 1 {
				go stream(t, c, pcm16k, pcm(t, noise(400), make([]int16, 16000)), 1)
			}
			if ev.Type == voice.ResponseDone {
				dones++
			}
		case <-timeout:
			t.Fatalf("events %v", types(evs))
		}
	}
	done := all(evs, voice.ToolCallDone)
	if len(done) != 1 || done[0].Tool.Outcome != tools.OutcomeCancelled || !run.cancelled.Load() {
		t.Fatalf("results %+v, tool context cancelled %v", done, run.cancelled.Load())
	}
	replies := all(evs, voice.ResponseDone)
	if !replies[0].Interrupted || replies[1].Text != "Hello. How can I help you today?" {
		t.Fatalf("replies %+v", replies)
	}
}

type blockingRunner struct {
	started   chan struct{}
	cancelled atomic.Bool
}

func (r *blockingRunner) RunTool(ctx context.Context, _ tools.Tool, _ llm.ToolCall) (string, error) {
	<-ctx.Done()
	r.cancelled.Store(true)
	return "", ctx.Err()
}

// end_call ends the call after the reply; transfer names its target.
func TestBuiltInTools(t *testing.T) {
	t.Parallel()
	conf := toolConf(tool(t, tools.Tool{Name: "end_call", Kind: tools.EndCall}))
	evs := toolCall(t, conf, providers(t, llm.DefaultScript), "goodbye", nil)
	i, rd := first(evs, voice.ResponseDone)
	if rd.Text != "Goodbye. Thank you for calling." || evs[len(evs)-1].Type != voice.EndRequested || i != len(evs)-2 {
		t.Fatalf("events %v, reply %q", types(evs), rd.Text)
	}
	conf = toolConf(tool(t, tools.Tool{Name: "transfer", Kind: tools.Transfer, Target: "+15551230000"}))
	evs = toolCall(t, conf, providers(t, llm.DefaultScript), "transfer me to a human", nil)
	tr := all(evs, voice.TransferRequested)
	if len(tr) != 1 || tr[0].Tool.Target != "+15551230000" {
		t.Fatalf("events %v", types(evs))
	}
	if _, rd := first(evs, voice.ResponseDone); rd.Text != "Transferring you now." {
		t.Fatalf("reply %q", rd.Text)
	}
}

// A tool result is taken only by the call that asked, for an open call id:
// another call (another session, another tenant) cannot answer it.
func TestToolResultOnlyOnTheAskingCall(t *testing.T) {
	t.Parallel()
	other, err := voice.New(context.Background(), toolConf(), providers(t, llm.DefaultScript))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conf := toolConf(tool(t, tools.Tool{Name: "book_meeting"}))
	evs := toolCall(t, conf, providers(t, llm.DefaultScript), ask, func(c *voice.Call, ev voice.Event) {
		if ev.Type != voice.ToolCallStarted {
			return
		}
		if err := other.ToolResult(ev.Tool.ID, `{"say":"hijacked"}`, false); !errors.Is(err, voice.ErrToolCallNotOpen) {
			t.Errorf("another call answered: %v", err)
		}
		if err := c.ToolResult(ev.Tool.ID, `{"say":"Booked."}`, false); err != nil {
			t.Error(err)
		}
	})
	if _, rd := first(evs, voice.ResponseDone); rd.Text != "Booked." {
		t.Fatalf("reply %q", rd.Text)
	}
}
