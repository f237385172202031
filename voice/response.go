package voice

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentvoicebox/avb/voice/audio"
	"github.com/agentvoicebox/avb/voice/llm"
	"github.com/agentvoicebox/avb/voice/tts"
)

// heldEvents is how many events a held response queues before its
// generation waits for the hold to end (about 25 s of audio in 100 ms chunks).
const heldEvents = 256

// response is one reply in progress: the model streams text, sentences go
// to speech as they complete, audio goes to the client as it is produced.
//
// A response can be held: its events wait in a queue instead of reaching
// the client. A preemptive response is held from its start until the turn
// is confirmed (released) or the caller goes on (discarded); a response the
// caller talks over, with ResumeFalseInterruption, is held (paused) until
// the caller's words say whether the interruption was real.
type response struct {
	id          int
	ctx         context.Context
	cancel      context.CancelFunc
	interrupted atomic.Bool
	discarded   atomic.Bool
	preemptive  bool
	// prompt is the partial transcript a preemptive response answers.
	prompt string

	// Written by the generating goroutines, read by the loop after respDone.
	text       strings.Builder
	usage      llm.Usage
	err        error
	firstToken time.Time
	ttsFirst   time.Time
	audioOutMS float64
	// msgs are the tool rounds (the assistant's calls, the results) the
	// conversation keeps; finalFrom is where the text after them starts.
	msgs      []llm.Message
	finalFrom int
	toolTime  time.Duration
	toolCalls int
	// endCall: the model called end_call.
	endCall atomic.Bool

	// Set by the loop (when the turn is confirmed), read by the loop.
	speechEnd, sttFinalAt time.Time
	vadEnd                time.Duration

	mu        sync.Mutex
	held      bool
	queue     []Event
	unheld    chan struct{} // closed when a hold ends
	sentMS    float64       // audio delivered to the client
	firstSent time.Time     // first audio delivered: playback starts
	pausedAt  time.Time
	paused    time.Duration // playback time spent paused
}

func (r *response) interrupt() {
	r.interrupted.Store(true)
	r.cancel()
	r.drop()
}

func (r *response) discard() {
	r.discarded.Store(true)
	r.cancel()
	r.drop()
}

// hold makes events wait; for a playing response it pauses playback.
func (r *response) hold() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held {
		return
	}
	r.held, r.unheld = true, make(chan struct{})
	if !r.firstSent.IsZero() {
		r.pausedAt = time.Now()
	}
}

// drop ends a hold, forgetting the queued events.
func (r *response) drop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endHold()
	r.queue = nil
}

func (r *response) endHold() {
	if !r.held {
		return
	}
	if !r.pausedAt.IsZero() {
		r.paused += time.Since(r.pausedAt)
		r.pausedAt = time.Time{}
	}
	r.held = false
	close(r.unheld)
}

func (r *response) isHeld() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.held
}

// delivered notes an event that reached the client (r.mu held).
func (r *response) delivered(ev Event) {
	if ev.Type != AudioDelta {
		return
	}
	if r.firstSent.IsZero() {
		r.firstSent = time.Now()
	}
	r.sentMS += ev.AudioMS
}

// played estimates how much reply audio the caller has heard: the client
// plays in real time from the first delivered byte, except while paused.
func (r *response) played() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.firstSent.IsZero() {
		return 0
	}
	elapsed := time.Since(r.firstSent) - r.paused
	if !r.pausedAt.IsZero() {
		elapsed -= time.Since(r.pausedAt)
	}
	return min(r.sentMS, float64(elapsed.Milliseconds()))
}

// emitFor hands a response's event to the client, or queues it while the
// response is held; it reports false once the response should stop.
func (c *Call) emitFor(r *response, ev Event) bool {
	r.mu.Lock()
	for r.held && len(r.queue) >= heldEvents {
		wait := r.unheld
		r.mu.Unlock()
		select {
		case <-wait:
		case <-r.ctx.Done():
			return false
		}
		r.mu.Lock()
	}
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		return false
	}
	if r.held {
		r.queue = append(r.queue, ev)
		return true
	}
	r.delivered(ev)
	return c.emit(ev)
}

// release ends a hold, delivering the queued events in order.
func (c *Call) release(r *response) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.queue {
		r.delivered(ev)
		c.emit(ev)
	}
	r.queue = nil
	r.endHold()
}

// newResponse starts generating a reply to msgs; a held one queues its events.
func (c *Call) newResponse(msgs []llm.Message, held bool) *response {
	c.nextResp++
	ctx, cancel := context.WithCancel(c.ctx)
	r := &response{id: c.nextResp, ctx: ctx, cancel: cancel}
	if held {
		r.hold()
	}
	cfg := c.Config()
	req := llm.Request{Model: cfg.Model, Instructions: cfg.Instructions, Messages: msgs}
	c.emitFor(r, Event{Type: ResponseStarted, ResponseID: r.id})
	c.running++
	go func() {
		r.err = c.respond(ctx, r, cfg, req)
		c.respDone <- r
	}()
	return r
}

// startResponse begins a reply to the conversation so far, once the one in
// progress (being cancelled) has finished.
func (c *Call) startResponse() {
	if c.resp != nil {
		c.startPending = c.resp.interrupted.Load()
		return
	}
	r := c.newResponse(append([]llm.Message(nil), c.history...), false)
	c.confirm(r)
	c.resp = r
}

// confirm stamps a response with the turn it answers.
func (c *Call) confirm(r *response) {
	r.speechEnd, r.sttFinalAt, r.vadEnd = c.speechEnd, c.sttFinalAt, c.vadEnd
}

func (c *Call) respond(ctx context.Context, r *response, cfg Config, req llm.Request) error {
	sentences := make(chan string, 16)
	speakDone := make(chan error, 1)
	go func() { speakDone <- c.speak(ctx, r, cfg, sentences) }()
	say := func(s string) error {
		select {
		case sentences <- s:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	var split llm.Sentences
	onDelta := func(delta string) error {
		if r.firstToken.IsZero() {
			r.firstToken = time.Now()
		}
		r.text.WriteString(delta)
		if !c.emitFor(r, Event{Type: TextDelta, ResponseID: r.id, Text: delta}) {
			return context.Canceled
		}
		for _, s := range split.Add(delta) {
			if err := say(s); err != nil {
				return err
			}
		}
		return nil
	}
	for _, t := range cfg.Tools {
		req.Tools = append(req.Tools, t.Definition())
	}
	var err error
	for round := 0; ; round++ {
		var calls []llm.ToolCall
		req.OnToolCall = func(tc llm.ToolCall) { calls = append(calls, tc) }
		r.finalFrom = r.text.Len()
		var u llm.Usage
		u, err = c.prov.LLM.Stream(ctx, req, onDelta)
		r.usage.InputTokens += u.InputTokens
		r.usage.OutputTokens += u.OutputTokens
		// What was said before the calls is spoken while they run.
		if rest := split.Flush(); rest != "" && err == nil {
			err = say(rest)
		}
		if err != nil || len(calls) == 0 {
			break
		}
		if round == maxToolRounds {
			err = fmt.Errorf("the model called tools %d times in one reply", maxToolRounds+1)
			break
		}
		asked := llm.Message{Role: "assistant", Content: r.text.String()[r.finalFrom:], ToolCalls: calls}
		results := c.runTools(ctx, r, cfg, calls, say)
		round := append([]llm.Message{asked}, results...)
		req.Messages = append(req.Messages, round...)
		r.msgs = append(r.msgs, round...)
		r.finalFrom = r.text.Len()
		if err = ctx.Err(); err != nil {
			break
		}
	}
	close(sentences)
	if serr := <-speakDone; err == nil {
		err = serr
	}
	return err
}

// speak synthesizes sentences in order and sends their audio in ~100 ms
// chunks. Synthesis never waits on delivery: a synthesizer is shared (one
// espeak-ng per process, or a worker of a pool), so its output goes to a
// queue of this reply, and the reply's delivery (which waits while the
// reply is held, or on a slow client) drains the queue.
func (c *Call) speak(ctx context.Context, r *response, cfg Config, sentences <-chan string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rs := audio.NewResampler(c.prov.TTS.SampleRate(), cfg.Output.SampleRate)
	chunk := cfg.Output.SampleRate / 10
	var pending []int16
	var out []byte
	flush := func(all bool) error {
		for len(pending) >= chunk || (all && len(pending) > 0) {
			n := min(chunk, len(pending))
			var err error
			out, err = audio.Encode(cfg.Output, pending[:n], out[:0])
			if err != nil {
				return err
			}
			pending = pending[n:]
			ms := float64(n) * 1000 / float64(cfg.Output.SampleRate)
			r.audioOutMS += ms
			if !c.emitFor(r, Event{Type: AudioDelta, ResponseID: r.id, Audio: append([]byte(nil), out...), AudioMS: ms}) {
				return context.Canceled
			}
		}
		return nil
	}
	q := &sampleQueue{more: make(chan struct{}, 1)}
	go func() {
		var err error
		for s := range sentences { // read to the end: the reply's writer never blocks
			if err == nil {
				err = c.prov.TTS.Synthesize(ctx, tts.Request{Text: s, Voice: cfg.Voice}, func(samples []int16) error {
					q.push(samples)
					return nil
				})
			}
		}
		q.close(err)
	}()
	for {
		samples, err := q.pop(ctx)
		if samples == nil {
			if err != nil {
				return err
			}
			return flush(true)
		}
		if r.ttsFirst.IsZero() {
			r.ttsFirst = time.Now()
		}
		pending = rs.Process(samples, pending)
		if err := flush(false); err != nil {
			return err
		}
	}
}

// sampleQueue hands synthesized audio from the synthesizer to delivery.
type sampleQueue struct {
	mu      sync.Mutex
	samples [][]int16
	done    bool
	err     error
	more    chan struct{} // signalled when something was added
}

func (q *sampleQueue) push(s []int16) {
	q.mu.Lock()
	q.samples = append(q.samples, s)
	q.mu.Unlock()
	q.signal()
}

func (q *sampleQueue) close(err error) {
	q.mu.Lock()
	q.done, q.err = true, err
	q.mu.Unlock()
	q.signal()
}

func (q *sampleQueue) signal() {
	select {
	case q.more <- struct{}{}:
	default:
	}
}

// pop returns the next samples, waiting for them; nil at the end (with the
// synthesis's error, if any) or when ctx ends.
func (q *sampleQueue) pop(ctx context.Context) ([]int16, error) {
	for {
		q.mu.Lock()
		if len(q.samples) > 0 {
			s := q.samples[0]
			q.samples[0] = nil
			q.samples = q.samples[1:]
			q.mu.Unlock()
			return s, nil
		}
		done, err := q.done, q.err
		q.mu.Unlock()
		if done {
			return nil, err
		}
		select {
		case <-q.more:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// metrics times the turn a finished response answered.
func (r *response) metrics() TurnMetrics {
	since := func(t time.Time) time.Duration {
		if t.IsZero() || r.speechEnd.IsZero() {
			return 0
		}
		return max(t.Sub(r.speechEnd), 0)
	}
	r.mu.Lock()
	firstSent := r.firstSent
	r.mu.Unlock()
	return TurnMetrics{VADEnd: r.vadEnd, STTFinal: since(r.sttFinalAt), LLMFirstToken: since(r.firstToken),
		TTSFirstAudio: since(r.ttsFirst), FirstByteSent: since(firstSent), AudioOutMS: r.audioOutMS, Preemptive: r.preemptive,
		Tool: r.toolTime, ToolCalls: r.toolCalls}
}

// finishResponse reports a reply that ended, completely or not. A held
// reply that finished generating waits (parked) for its hold to end.
func (c *Call) finishResponse(r *response) {
	if r.discarded.Load() {
		return
	}
	interrupted := r.interrupted.Load()
	if !interrupted && r.isHeld() {
		c.parked = r
		return
	}
	if c.parked == r {
		c.parked = nil
	}
	if c.resp == r {
		c.resp, c.respPaused = nil, false
	}
	played := r.audioOutMS
	if interrupted {
		played = min(played, r.played())
	}
	text := r.text.String()
	c.history = append(c.history, r.msgs...)
	if final := text[min(r.finalFrom, len(text)):]; final != "" {
		c.history = append(c.history, llm.Message{Role: "assistant", Content: final})
	}
	if r.err != nil && !errors.Is(r.err, context.Canceled) {
		c.emit(Event{Type: Error, ResponseID: r.id, Err: r.err})
	}
	c.emit(Event{Type: ResponseDone, ResponseID: r.id, Interrupted: interrupted, PlayedMS: played,
		Usage: r.usage, Metrics: r.metrics(), Text: text})
	if r.endCall.Load() && !interrupted {
		c.emit(Event{Type: EndRequested, ResponseID: r.id})
	}
	if c.startPending {
		c.startPending = false
		c.startResponse()
	}
}
