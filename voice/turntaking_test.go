package voice_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/voice"
	"github.com/agentvoicebox/avb/voice/audio"
	"github.com/agentvoicebox/avb/voice/llm"
	"github.com/agentvoicebox/avb/voice/stt"
)

// scriptedSTT is a recognizer behind the stt port that hears, utterance by
// utterance, the texts it is given: it makes turn-taking decisions that
// hinge on what was said (a noise has no words) deterministic.
type scriptedSTT struct {
	mu      sync.Mutex
	finals  []string
	partial string
}

func (s *scriptedSTT) Start(context.Context, stt.Options) (stt.Session, error) {
	return &scriptedSession{stt: s}, nil
}

// next is the text of the next utterance that finishes.
func (s *scriptedSTT) next() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	final := ""
	if len(s.finals) > 0 {
		final, s.finals = s.finals[0], s.finals[1:]
	}
	return final
}

func (s *scriptedSTT) peek() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.partial != "" {
		return s.partial
	}
	if len(s.finals) > 0 {
		return s.finals[0]
	}
	return ""
}

type scriptedSession struct {
	stt   *scriptedSTT
	heard bool
}

func (s *scriptedSession) Write([]int16) error { s.heard = true; return nil }
func (s *scriptedSession) Partial() string {
	if !s.heard {
		return ""
	}
	return s.stt.peek()
}
func (s *scriptedSession) Finish() (string, error) { return s.stt.next(), nil }
func (s *scriptedSession) Close()                  {}

// recordingModel wraps a model and records each request it was given and
// whether it was cancelled before it finished.
type recordingModel struct {
	llm.Model
	mu    sync.Mutex
	calls []modelCall
}

type modelCall struct {
	user      string
	cancelled bool
	at        time.Time
}

func (m *recordingModel) Stream(ctx context.Context, req llm.Request, emit func(string) error) (llm.Usage, error) {
	m.mu.Lock()
	i := len(m.calls)
	m.calls = append(m.calls, modelCall{user: req.Messages[len(req.Messages)-1].Content, at: time.Now()})
	m.mu.Unlock()
	u, err := m.Model.Stream(ctx, req, emit)
	if ctx.Err() != nil {
		m.mu.Lock()
		m.calls[i].cancelled = true
		m.mu.Unlock()
	}
	return u, err
}

func (m *recordingModel) Calls() []modelCall {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]modelCall(nil), m.calls...)
}

func noise(ms int) []int16 {
	n := make([]int16, 16000*ms/1000)
	for i := range n {
		n[i] = int16((i*7919)%16000 - 8000)
	}
	return n
}

var pcm16k = audio.Format{Encoding: audio.PCM16, SampleRate: 16000}

func pcm(t testing.TB, samples ...[]int16) []byte {
	t.Helper()
	var all []int16
	for _, s := range samples {
		all = append(all, s...)
	}
	b, err := audio.Encode(pcm16k, all, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func longReply(delay time.Duration) *llm.Scripted {
	return &llm.Scripted{Rules: []llm.Rule{{Match: []string{"book meeting"}, Reply: strings.Repeat("This is a long answer that goes on. ", 8)},
		{Match: []string{"cancel meeting"}, Reply: "Okay. Your meeting is cancelled."}},
		Fallback: "What?", WordDelay: delay}
}

// interruptWith plays the caller's request, then, once the reply's audio
// flows, sends the interruption; it returns the events that followed.
func interruptWith(t *testing.T, conf voice.Config, prov voice.Providers, interruption []byte) ([]voice.Event, []time.Time) {
	t.Helper()
	c, err := voice.New(context.Background(), conf, prov)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go stream(t, c, pcm16k, speech(t, ask, pcm16k, 700), 4)
	var evs []voice.Event
	var at []time.Time
	sent := false
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev := <-c.Events():
			if ev.Type == voice.AudioDelta && !sent {
				sent = true
				go stream(t, c, pcm16k, interruption, 1)
			}
			if sent {
				evs, at = append(evs, ev), append(at, time.Now())
			}
			done := 0
			for _, e := range evs {
				if e.Type == voice.ResponseDone {
					done++
				}
			}
			if ev.Type == voice.ResponseDone && (!ev.Interrupted || done == 2) {
				return evs, at
			}
		case <-timeout:
			t.Fatalf("no end: %v", types(evs))
		}
	}
}

func types(evs []voice.Event) []voice.EventType {
	var out []voice.EventType
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func first(evs []voice.Event, typ voice.EventType) (int, voice.Event) {
	for i, e := range evs {
		if e.Type == typ {
			return i, e
		}
	}
	return -1, voice.Event{}
}

// A noise long enough to interrupt, with no words in it, is a false
// interruption: the paused reply resumes from where the caller stopped
// hearing it and finishes uninterrupted, and no new turn is taken.
func TestFalseInterruptionResumes(t *testing.T) {
	t.Parallel()
	conf := cfg(pcm16k, pcm16k)
	conf.MinInterruptionMS, conf.ResumeFalseInterruption = 100, true
	prov := providers(t, longReply(100*time.Millisecond))
	prov.STT = &scriptedSTT{finals: []string{ask, ""}}
	evs, at := interruptWith(t, conf, prov, pcm(t, noise(400), make([]int16, 16000*700/1000)))

	iStart, _ := first(evs, voice.SpeechStarted)
	iResumed, resumed := first(evs, voice.ResponseResumed)
	_, done := first(evs, voice.ResponseDone)
	if iStart < 0 || iResumed < iStart {
		t.Fatalf("no resume after the noise: %v", types(evs))
	}
	if done.Interrupted || done.ResponseID != resumed.ResponseID {
		t.Fatalf("reply ended %+v after resuming %d", done, resumed.ResponseID)
	}
	if resumed.PlayedMS <= 0 || resumed.PlayedMS >= done.Metrics.AudioOutMS {
		t.Fatalf("resumed at %v ms of %v", resumed.PlayedMS, done.Metrics.AudioOutMS)
	}
	// While paused the caller gets nothing new: no audio from the pause
	// (MinInterruptionMS into the noise) to the resume, though the reply
	// goes on being generated (a sentence every ~0.7 s) and is sent after.
	paused := at[iStart].Add(time.Duration(conf.MinInterruptionMS+60) * time.Millisecond)
	after := 0
	for i, e := range evs {
		if e.Type == voice.AudioDelta && at[i].After(paused) && i < iResumed {
			t.Fatalf("audio sent %v after the pause began", at[i].Sub(paused))
		}
		if e.Type == voice.AudioDelta && i > iResumed {
			after++
		}
	}
	if after == 0 || at[iResumed].Sub(at[iStart]) < 800*time.Millisecond {
		t.Fatalf("resumed %v after speech started, %d audio deltas after", at[iResumed].Sub(at[iStart]), after)
	}
	if n := strings.Count(strings.Join(typeNames(evs), ","), "started"); n != 0 {
		t.Fatalf("a new response started: %v", types(evs))
	}
}

func typeNames(evs []voice.Event) []string {
	var out []string
	for _, e := range evs {
		if e.Type == voice.ResponseStarted {
			out = append(out, "started")
		}
	}
	return out
}

// Real words during a paused reply end it (interrupted, with what was
// heard) and are answered.
func TestRealInterruptionEndsPausedReply(t *testing.T) {
	t.Parallel()
	conf := cfg(pcm16k, pcm16k)
	conf.MinInterruptionMS, conf.ResumeFalseInterruption = 100, true
	prov := providers(t, longReply(10*time.Millisecond))
	prov.STT = &scriptedSTT{finals: []string{ask, "cancel my meeting"}}
	evs, _ := interruptWith(t, conf, prov, speech(t, "cancel my meeting", pcm16k, 700))
	_, done := first(evs, voice.ResponseDone)
	if !done.Interrupted || done.PlayedMS <= 0 || done.PlayedMS > done.Metrics.AudioOutMS {
		t.Fatalf("first reply %+v", done)
	}
	if i, _ := first(evs, voice.ResponseResumed); i >= 0 {
		t.Fatal("resumed after real words")
	}
	var last voice.Event
	for _, e := range evs {
		if e.Type == voice.ResponseDone {
			last = e
		}
	}
	if last.ResponseID != done.ResponseID+1 || last.Text != "Okay. Your meeting is cancelled." || last.Interrupted {
		t.Fatalf("answer to the interruption: %+v", last)
	}
}

// collect runs a call over audio until its first ResponseDone.
func collect(t *testing.T, conf voice.Config, prov voice.Providers, in []byte) []voice.Event {
	t.Helper()
	c, err := voice.New(context.Background(), conf, prov)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go stream(t, c, pcm16k, in, 1)
	var evs []voice.Event
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev := <-c.Events():
			evs = append(evs, ev)
			if ev.Type == voice.ResponseDone {
				return evs
			}
		case <-timeout:
			t.Fatalf("no response: %v", types(evs))
		}
	}
}

// Preemptive generation: the model starts during the caller's pause, so a
// slow model's first token is ready when the silence window confirms the
// turn, and the reply is the same.
func TestPreemptiveGenerationIsUsed(t *testing.T) {
	t.Parallel()
	slow := &slowFirstToken{Model: llm.DefaultScript, delay: 250 * time.Millisecond}
	run := func(preemptive bool) voice.Event {
		conf := cfg(pcm16k, pcm16k)
		conf.PreemptiveGeneration = preemptive
		prov := providers(t, slow)
		prov.STT = &scriptedSTT{finals: []string{ask}}
		evs := collect(t, conf, prov, speech(t, ask, pcm16k, 800))
		_, done := first(evs, voice.ResponseDone)
		return done
	}
	with, without := run(true), run(false)
	if !with.Metrics.Preemptive || without.Metrics.Preemptive {
		t.Fatalf("preemptive flags %v %v", with.Metrics.Preemptive, without.Metrics.Preemptive)
	}
	if with.Text != without.Text || with.Text == "" {
		t.Fatalf("replies differ: %q vs %q", with.Text, without.Text)
	}
	t.Logf("first byte after the end of speech was detected: %v preemptive, %v without (model first token %v)",
		with.Metrics.FirstByteSent, without.Metrics.FirstByteSent, slow.delay)
	if without.Metrics.FirstByteSent < slow.delay || with.Metrics.FirstByteSent > slow.delay/2 {
		t.Fatalf("first byte %v with preemptive generation, %v without", with.Metrics.FirstByteSent, without.Metrics.FirstByteSent)
	}
}

// The caller pauses, a preemptive reply starts on the partial transcript,
// then the caller goes on: that reply is discarded unheard, and the turn is
// answered from the whole transcript.
func TestPreemptiveGenerationDiscardedWhenCallerGoesOn(t *testing.T) {
	t.Parallel()
	model := &recordingModel{Model: &slowFirstToken{Model: llm.DefaultScript, delay: 600 * time.Millisecond}}
	conf := cfg(pcm16k, pcm16k)
	conf.PreemptiveGeneration = true
	prov := providers(t, model)
	prov.STT = &scriptedSTT{finals: []string{"hello please book a meeting"}, partial: "hello"}
	in := append(speech(t, "hello", pcm16k, 350), speech(t, "please book a meeting", pcm16k, 800)...)
	evs := collect(t, conf, prov, in)
	calls := model.Calls()
	if len(calls) < 2 || calls[0].user != "hello" || !calls[0].cancelled {
		t.Fatalf("model calls %+v: want a cancelled preemptive call on the partial", calls)
	}
	last := calls[len(calls)-1]
	if last.user != "hello please book a meeting" || last.cancelled {
		t.Fatalf("last model call %+v", last)
	}
	_, stopped := first(evs, voice.SpeechStopped)
	_ = stopped
	started := 0
	for _, e := range evs {
		if e.Type == voice.ResponseStarted {
			started++
		}
		if e.Type == voice.TextDelta && strings.Contains(e.Text, "Hello") {
			t.Fatalf("the discarded reply reached the caller: %q", e.Text)
		}
	}
	_, done := first(evs, voice.ResponseDone)
	if started != 1 || done.Metrics.Preemptive || !strings.HasPrefix(done.Text, "Sure.") {
		t.Fatalf("%d responses started; reply %+v", started, done)
	}
}

// slowFirstToken delays a model's first token, like a remote LLM.
type slowFirstToken struct {
	llm.Model
	delay time.Duration
}

func (s *slowFirstToken) Stream(ctx context.Context, req llm.Request, emit func(string) error) (llm.Usage, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return llm.Usage{}, ctx.Err()
	}
	return s.Model.Stream(ctx, req, emit)
}
