// Package voice is the realtime media engine: one Call per live conversation
// takes caller audio in any supported wire format, detects turns, transcribes
// them, asks the model, and speaks the reply back sentence by sentence, with
// barge-in. It knows nothing of HTTP, SQL or Temporal.
//
// Buffers are bounded everywhere:
//   - input: at most InputBufferMS of audio waits for processing; a client
//     sending faster than that gets ErrInputOverflow (resource_exhausted);
//   - output: at most EventBuffer events wait for the client; a client that
//     reads nothing for SlowClientTimeout ends the call with ErrSlowClient.
package voice

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentvoicebox/avb/voice/audio"
	"github.com/agentvoicebox/avb/voice/llm"
	"github.com/agentvoicebox/avb/voice/stt"
	"github.com/agentvoicebox/avb/voice/tools"
	"github.com/agentvoicebox/avb/voice/tts"
	"github.com/agentvoicebox/avb/voice/vad"
)

// Limits of a call.
const (
	InputBufferMS     = 2000
	EventBuffer       = 256
	SlowClientTimeout = 5 * time.Second
	MaxFrameBytes     = 64 << 10 // one AppendAudio call
	frameSamples      = stt.SampleRate * vad.FrameMS / 1000
)

// Errors of a call.
var (
	ErrInputOverflow = errors.New("audio arrives faster than real time beyond the input buffer")
	ErrSlowClient    = errors.New("client is not reading events")
	ErrFrameTooLarge = fmt.Errorf("audio message larger than %d bytes", MaxFrameBytes)
	ErrClosed        = errors.New("call closed")
)

// TurnMode says who decides when the caller has finished speaking.
type TurnMode int

// Turn modes.
const (
	ServerVAD TurnMode = iota // the engine detects the end of speech
	Manual                    // the client commits the input buffer
)

// Config is a call's configuration; Update may change it mid-call.
type Config struct {
	Input, Output audio.Format
	Voice         string
	Model         string
	Instructions  string
	// Phrases are recognition hints (grammar mode for the embedded recognizer).
	Phrases []string
	Turn    TurnMode
	VAD     vad.Config
	// CreateResponse answers each detected turn automatically (server VAD).
	CreateResponse bool
	// InterruptResponse lets caller speech cancel a response in progress.
	InterruptResponse bool
	// MinInterruptionMS of caller speech is needed before it cancels a
	// response (0: at once), so a cough or a "hm" does not cut the agent off;
	// speech shorter than that during a response is ignored.
	MinInterruptionMS int
	// ResumeFalseInterruption pauses an interrupted response instead of
	// ending it; if the caller's speech holds no words it resumes.
	ResumeFalseInterruption bool
	// PreemptiveGeneration starts the model on the partial transcript when
	// the caller pauses, before the silence window confirms the turn.
	PreemptiveGeneration bool
	// Echo sends each caller frame straight back (no providers).
	Echo bool
	// Tools the model may call (compiled with tools.New).
	Tools []tools.Tool
	// Filler is said when tools run longer than FillerDelay (0:
	// DefaultFillerDelay); empty: silence while tools run.
	Filler      string
	FillerDelay time.Duration
	// History is the conversation so far when a call resumes a session
	// (read by New only; an update leaves the call's history as it is).
	History []llm.Message
}

// preparer is a recognizer that can get ready for a call ahead of need.
type preparer interface{ Prepare(phrases []string) }

// Providers are the models a call uses.
type Providers struct {
	STT stt.Transcriber
	LLM llm.Model
	TTS tts.Synthesizer
	// Tools runs webhook tools (nil: they fail with an error result).
	Tools ToolRunner
}

// EventType tells what an Event reports.
type EventType int

// Event types.
const (
	SpeechStarted EventType = iota + 1
	SpeechStopped
	TranscriptPartial
	TranscriptFinal
	ResponseStarted
	TextDelta
	AudioDelta
	ResponseDone
	Error
	// ResponseResumed: a paused response plays on from PlayedMS.
	ResponseResumed
	// ToolCallStarted: the model called a tool (Tool); a client tool waits
	// for ToolResult.
	ToolCallStarted
	// ToolCallDone: a tool call ended (Tool.Outcome).
	ToolCallDone
	// TransferRequested: the agent transfers the caller to Tool.Target.
	TransferRequested
	// EndRequested: the agent ended the call (end_call) and its reply is
	// done; the call should be closed.
	EndRequested
)

// Event is something the client is told.
type Event struct {
	Type       EventType
	ResponseID int
	Text       string
	Audio      []byte  // encoded in the output format
	AudioMS    float64 // input position (speech events) or length (audio deltas)
	// ResponseDone: whether caller speech cut it short, and how much of its
	// audio the caller can have heard by then.
	Interrupted bool
	PlayedMS    float64
	Usage       llm.Usage
	Metrics     TurnMetrics
	Err         error
	Tool        *ToolEvent
}

// TurnMetrics time one turn from the moment the end of the caller's speech
// was detected; VADEnd is the time from the last speech to that detection.
type TurnMetrics struct {
	VADEnd        time.Duration
	STTFinal      time.Duration
	LLMFirstToken time.Duration
	TTSFirstAudio time.Duration
	FirstByteSent time.Duration
	AudioOutMS    float64
	// Preemptive: the model started before the turn was confirmed.
	Preemptive bool
	// Tool is the time spent waiting on tools; ToolCalls how many ran.
	Tool      time.Duration
	ToolCalls int
}

type control int

const (
	ctlCommit control = iota
	ctlClear
	ctlCreateResponse
	ctlCancelResponse
)

// Call is one live conversation.
type Call struct {
	prov   Providers
	ctx    context.Context
	cancel context.CancelCauseFunc
	// lateMS is how many ms of audio may still wait for room in the input
	// buffer (see AllowBacklog).
	lateMS atomic.Int64

	mu     sync.Mutex // guards cfg and the input remainder
	cfg    Config
	dec    []int16
	rs     *audio.Resampler
	rsFrom int
	rest   []int16

	frames   chan []int16
	controls chan control
	events   chan Event
	done     chan struct{}

	// Loop state (loop goroutine only).
	det  *vad.Detector
	sess stt.Session
	// Recognition sessions start off the loop (a decoder can take half a
	// second to create): frames wait in backlog until it is ready.
	starting   bool
	sessReady  chan sessionStart
	backlog    [][]int16
	lastPart   string
	framesIn   int
	inputMS    float64
	history    []llm.Message
	nextResp   int
	speechEnd  time.Time
	sttFinalAt time.Time
	lastVoiced time.Time
	vadEnd     time.Duration
	// overlapMS counts caller speech while a response plays (-1: none).
	overlapMS int

	// resp is the response the caller hears (respPaused: held by a possible
	// false interruption); pre is a preemptive one waiting for the turn to
	// be confirmed; parked finished generating while held.
	resp, pre, parked *response
	respPaused        bool
	// startPending: a turn ended while its predecessor was being cancelled.
	startPending bool
	running      int // response goroutines not yet reported on respDone
	respDone     chan *response

	echoRS  *audio.Resampler
	echoBuf []int16

	// texts are turns the caller gave as text (DTMF digits on a phone call).
	texts chan string

	// Client tool calls waiting for the client's result, by call id.
	toolMu  sync.Mutex
	pending map[string]chan toolAnswer
}

// New starts a call. It ends when ctx is done, Close is called, or a limit is broken.
func New(ctx context.Context, cfg Config, prov Providers) (*Call, error) {
	if err := cfg.Input.Validate(); err != nil {
		return nil, fmt.Errorf("input format: %w", err)
	}
	if err := cfg.Output.Validate(); err != nil {
		return nil, fmt.Errorf("output format: %w", err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	c := &Call{
		prov: prov, ctx: ctx, cancel: cancel, cfg: cfg,
		frames:    make(chan []int16, InputBufferMS/vad.FrameMS),
		controls:  make(chan control, 16),
		texts:     make(chan string, 16),
		events:    make(chan Event, EventBuffer),
		done:      make(chan struct{}),
		det:       vad.New(cfg.VAD),
		respDone:  make(chan *response, 4),
		sessReady: make(chan sessionStart, 1),
		history:   slices.Clone(cfg.History),
	}
	c.cfg.History = nil
	if p, ok := prov.STT.(preparer); ok && !cfg.Echo {
		p.Prepare(cfg.Phrases) // a recognizer ready before the caller speaks
	}
	go c.loop()
	return c, nil
}

// Events delivers what happens; it is closed when the call ends.
func (c *Call) Events() <-chan Event { return c.events }

// Err is why the call ended (nil while it runs or after a clean Close).
func (c *Call) Err() error {
	if err := context.Cause(c.ctx); err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// Close ends the call and waits for it to stop.
func (c *Call) Close() {
	c.cancel(ErrClosed)
	<-c.done
}

// Config returns the current configuration.
func (c *Call) Config() Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg
}

// Update changes the configuration; formats must stay valid.
func (c *Call) Update(cfg Config) error {
	if err := cfg.Input.Validate(); err != nil {
		return fmt.Errorf("input format: %w", err)
	}
	if err := cfg.Output.Validate(); err != nil {
		return fmt.Errorf("output format: %w", err)
	}
	cfg.History = nil
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cfg = cfg
	return nil
}

// AllowBacklog tells the call that the caller has been streaming for d
// before the call was ready (the session was opening): up to that much
// audio may wait for room in the input buffer instead of overflowing it.
func (c *Call) AllowBacklog(d time.Duration) {
	c.lateMS.Add(d.Milliseconds())
}

// AppendAudio takes caller audio in the input format.
func (c *Call) AppendAudio(b []byte) error {
	if len(b) > MaxFrameBytes {
		return ErrFrameTooLarge
	}
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	c.mu.Lock()
	in := c.cfg.Input
	var err error
	c.dec, err = audio.Decode(in, b, c.dec)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	if c.rs == nil || c.rsFrom != in.SampleRate {
		c.rs, c.rsFrom = audio.NewResampler(in.SampleRate, stt.SampleRate), in.SampleRate
	}
	c.rest = c.rs.Process(c.dec, c.rest)
	var ready [][]int16
	for len(c.rest) >= frameSamples {
		f := make([]int16, frameSamples)
		copy(f, c.rest)
		ready = append(ready, f)
		c.rest = c.rest[frameSamples:]
	}
	c.rest = append([]int16(nil), c.rest...)
	c.mu.Unlock()
	for _, f := range ready {
		select {
		case c.frames <- f:
			continue
		default:
		}
		// Full. Audio that arrived before the call was ready may wait for
		// room, as long as it was late; anything else arrives faster than
		// real time.
		// Each frame let in this way spends its own length of the late
		// time, or the time it waited if longer: at most the late time of
		// audio, and of waiting, gets in beyond the buffer.
		late := c.lateMS.Load()
		if late <= 0 {
			return ErrInputOverflow
		}
		start := time.Now()
		wait := time.NewTimer(time.Duration(late) * time.Millisecond)
		select {
		case c.frames <- f:
			wait.Stop()
			c.lateMS.Add(-max(time.Since(start).Milliseconds(), vad.FrameMS))
		case <-c.ctx.Done():
			wait.Stop()
			return ErrClosed
		case <-wait.C:
			c.lateMS.Store(0)
			return ErrInputOverflow
		}
	}
	return nil
}

func (c *Call) send(ctl control) error {
	select {
	case c.controls <- ctl:
		return nil
	case <-c.ctx.Done():
		return ErrClosed
	}
}

// Commit ends the caller's turn now (manual turn detection).
func (c *Call) Commit() error { return c.send(ctlCommit) }

// Clear drops the caller audio not yet committed.
func (c *Call) Clear() error { return c.send(ctlClear) }

// CreateResponse asks for a reply to the conversation so far.
func (c *Call) CreateResponse() error { return c.send(ctlCreateResponse) }

// CancelResponse stops the reply in progress.
func (c *Call) CancelResponse() error { return c.send(ctlCancelResponse) }

// Input is a turn the caller gave as text rather than speech (the keys
// pressed on a phone): it interrupts a reply in progress, joins the
// conversation as the caller's words and is answered like a spoken turn.
func (c *Call) Input(text string) error {
	select {
	case c.texts <- text:
		return nil
	case <-c.ctx.Done():
		return ErrClosed
	}
}

func (c *Call) typed(text string) {
	text = strings.TrimSpace(text)
	if text == "" {
		return
	}
	if r := c.resp; r != nil && !c.respPaused {
		r.interrupt()
		if c.parked == r {
			c.finishResponse(r)
		}
	}
	if c.pre != nil {
		c.dropPre()
	}
	c.speechEnd, c.vadEnd = time.Now(), 0
	c.sttFinalAt = c.speechEnd
	c.emit(Event{Type: TranscriptFinal, Text: text})
	c.history = append(c.history, llm.Message{Role: "user", Content: text})
	c.endTurn(c.Config(), text)
}

// emit hands an event to the client, waiting at most SlowClientTimeout.
func (c *Call) emit(ev Event) bool {
	select {
	case c.events <- ev:
		return true
	default:
	}
	t := time.NewTimer(SlowClientTimeout)
	defer t.Stop()
	select {
	case c.events <- ev:
		return true
	case <-t.C:
		c.cancel(ErrSlowClient)
		return false
	case <-c.ctx.Done():
		return false
	}
}

func (c *Call) loop() {
	defer close(c.done)
	defer close(c.events)
	defer func() {
		c.dropSession()
		// c.ctx is done: every response's generation stops.
		for ; c.running > 0; c.running-- {
			<-c.respDone
		}
	}()
	for {
		select {
		case <-c.ctx.Done():
			if err := c.Err(); err != nil {
				select { // best effort: the client may be gone
				case c.events <- Event{Type: Error, Err: err}:
				default:
				}
			}
			return
		case f := <-c.frames:
			c.frame(f)
		case ctl := <-c.controls:
			c.control(ctl)
		case text := <-c.texts:
			c.typed(text)
		case r := <-c.respDone:
			c.running--
			c.finishResponse(r)
		case st := <-c.sessReady:
			c.sessionReady(st)
		}
	}
}

func (c *Call) frame(f []int16) {
	cfg := c.Config()
	c.framesIn++
	c.inputMS += vad.FrameMS
	if cfg.Echo {
		c.echo(cfg, f)
	}
	if cfg.Turn == Manual {
		if !cfg.Echo {
			c.feed(f)
		}
		return
	}
	ev := c.det.Process(f)
	if c.det.Speaking() && c.det.SilenceMS() == 0 {
		c.lastVoiced = time.Now()
	}
	if cfg.Echo {
		c.speechEvent(ev)
		return
	}
	switch ev {
	case vad.SpeechStarted:
		c.speechEvent(ev)
		c.overlapMS = -1
		if c.resp != nil && !c.respPaused && cfg.InterruptResponse {
			c.overlapMS = 0
			c.maybeInterrupt(cfg, 0)
		}
		for _, p := range c.det.Prefix() {
			c.feed(p)
		}
	case vad.SpeechStopped:
		c.speechEvent(ev)
		if c.overlapMS >= 0 && c.resp != nil {
			// Too short to interrupt the reply: not a turn (a cough, a "hm").
			c.overlapMS = -1
			c.dropSession()
			return
		}
		c.endTurn(cfg, c.finishTurn())
	default:
		if c.det.Speaking() {
			c.feed(f)
			if c.overlapMS >= 0 {
				c.maybeInterrupt(cfg, vad.FrameMS)
			}
			c.preempt(cfg)
		}
	}
}

// speechEvent reports the detector's speech start or stop.
func (c *Call) speechEvent(ev vad.Event) {
	switch ev {
	case vad.SpeechStarted:
		c.emit(Event{Type: SpeechStarted, AudioMS: c.inputMS})
	case vad.SpeechStopped:
		c.speechEnd = time.Now()
		c.vadEnd = c.speechEnd.Sub(c.lastVoiced)
		c.emit(Event{Type: SpeechStopped, AudioMS: c.inputMS})
	}
}

// endTurn acts on the caller's finished turn: it decides a paused reply
// (words: it ends; none: a false interruption, it resumes), adopts or drops
// a preemptive reply, or starts a new one.
func (c *Call) endTurn(cfg Config, text string) {
	if c.resp != nil && c.respPaused {
		c.respPaused = false
		if text == "" {
			c.resume(c.resp)
			return
		}
		c.resp.interrupt()
		if c.parked == c.resp {
			c.finishResponse(c.resp)
		}
	}
	if pre := c.pre; pre != nil {
		if text != "" && cfg.CreateResponse && c.resp == nil && sameWords(text, pre.prompt) {
			c.pre = nil
			c.confirm(pre)
			c.resp = pre
			c.resume(pre)
			return
		}
		c.dropPre()
	}
	if text != "" && cfg.CreateResponse {
		c.startResponse()
	}
}

// resume ends a response's hold, and reports it if it finished meanwhile.
func (c *Call) resume(r *response) {
	if !r.preemptive {
		c.emit(Event{Type: ResponseResumed, ResponseID: r.id, PlayedMS: r.played()})
	}
	c.release(r)
	if c.parked == r {
		c.finishResponse(r)
	}
}

// preempt starts a preemptive reply once the caller has paused long enough,
// and drops it when they go on.
func (c *Call) preempt(cfg Config) {
	if !cfg.PreemptiveGeneration || !cfg.CreateResponse {
		return
	}
	silent := c.det.SilenceMS()
	if silent == 0 {
		if c.pre != nil { // the caller goes on
			c.dropPre()
		}
		return
	}
	if c.pre != nil || c.resp != nil || c.sess == nil || silent < min(200, c.det.SilenceDurationMS()/2) {
		return
	}
	text := strings.TrimSpace(c.sess.Partial())
	if text == "" {
		return
	}
	msgs := append(append([]llm.Message(nil), c.history...), llm.Message{Role: "user", Content: text})
	c.pre = c.newResponse(msgs, true)
	c.pre.preemptive, c.pre.prompt = true, text
}

// dropPre discards the preemptive response unheard.
func (c *Call) dropPre() {
	c.pre.discard()
	if c.parked == c.pre {
		c.parked = nil
	}
	c.pre = nil
}

// sameWords compares transcripts, ignoring case and spacing.
func sameWords(a, b string) bool {
	return strings.EqualFold(strings.Join(strings.Fields(a), " "), strings.Join(strings.Fields(b), " "))
}

// echo sends a caller frame straight back in the output format.
func (c *Call) echo(cfg Config, f []int16) {
	if c.echoRS == nil {
		c.echoRS = audio.NewResampler(stt.SampleRate, cfg.Output.SampleRate)
	}
	c.echoBuf = c.echoRS.Process(f, c.echoBuf[:0])
	b, err := audio.Encode(cfg.Output, c.echoBuf, nil)
	if err != nil {
		c.emit(Event{Type: Error, Err: err})
		return
	}
	c.emit(Event{Type: AudioDelta, Audio: b, AudioMS: float64(len(c.echoBuf)) * 1000 / float64(cfg.Output.SampleRate)})
}

// maybeInterrupt counts caller speech over a response and, once it lasts
// MinInterruptionMS, interrupts the response (or pauses it, to resume if
// the interruption turns out to hold no words).
func (c *Call) maybeInterrupt(cfg Config, ms int) {
	c.overlapMS += ms
	if c.resp == nil {
		c.overlapMS = -1
		return
	}
	if c.overlapMS >= cfg.MinInterruptionMS {
		if cfg.ResumeFalseInterruption {
			c.resp.hold()
			c.respPaused = true
		} else {
			c.resp.interrupt()
		}
		c.overlapMS = -1
	}
}

// sessionStart is a recognition session that finished starting.
type sessionStart struct {
	s   stt.Session
	err error
}

// feed passes a frame to recognition, starting a session if needed.
func (c *Call) feed(f []int16) {
	if c.sess == nil && len(c.backlog) >= InputBufferMS/vad.FrameMS {
		c.awaitSession() // backpressure: the input buffer is the bound
	}
	if c.sess == nil {
		c.backlog = append(c.backlog, f)
		if !c.starting {
			c.starting = true
			phrases := c.Config().Phrases
			go func() {
				s, err := c.prov.STT.Start(c.ctx, stt.Options{Phrases: phrases})
				c.sessReady <- sessionStart{s, err}
			}()
		}
		return
	}
	if err := c.sess.Write(f); err != nil {
		c.emit(Event{Type: Error, Err: fmt.Errorf("speech recognition: %w", err)})
		return
	}
	if c.framesIn%5 == 0 { // partials every 100 ms
		if p := c.sess.Partial(); p != "" && p != c.lastPart {
			c.lastPart = p
			c.emit(Event{Type: TranscriptPartial, Text: p})
		}
	}
}

// sessionReady takes a started recognition session and feeds it the backlog.
func (c *Call) sessionReady(st sessionStart) {
	c.starting = false
	backlog := c.backlog
	c.backlog = nil
	if st.err != nil {
		c.emit(Event{Type: Error, Err: fmt.Errorf("speech recognition: %w", st.err)})
		return
	}
	c.sess, c.lastPart = st.s, ""
	for _, f := range backlog {
		c.feed(f)
	}
}

// awaitSession waits for a session still starting (the turn ends now).
func (c *Call) awaitSession() {
	if c.starting {
		c.sessionReady(<-c.sessReady)
	}
}

// dropSession abandons the utterance being recognized.
func (c *Call) dropSession() {
	if c.starting {
		if st := <-c.sessReady; st.s != nil {
			st.s.Close()
		}
		c.starting = false
	}
	c.backlog = nil
	if c.sess != nil {
		c.sess.Close()
		c.sess = nil
	}
}

// finishTurn finalizes recognition of the caller's turn and records it.
func (c *Call) finishTurn() string {
	c.awaitSession()
	if c.sess == nil {
		return ""
	}
	text, err := c.sess.Finish()
	c.sess = nil
	c.sttFinalAt = time.Now()
	if err != nil {
		c.emit(Event{Type: Error, Err: fmt.Errorf("speech recognition: %w", err)})
		return ""
	}
	text = strings.TrimSpace(text)
	c.emit(Event{Type: TranscriptFinal, Text: text})
	if text != "" {
		c.history = append(c.history, llm.Message{Role: "user", Content: text})
	}
	return text
}

func (c *Call) control(ctl control) {
	switch ctl {
	case ctlCommit:
		c.speechEnd, c.vadEnd = time.Now(), 0
		c.det.Reset()
		c.endTurn(c.Config(), c.finishTurn())
	case ctlClear:
		c.dropSession()
		c.det.Reset()
	case ctlCreateResponse:
		c.speechEnd, c.vadEnd = time.Now(), 0
		c.startResponse()
	case ctlCancelResponse:
		if r := c.resp; r != nil {
			r.interrupt()
			if c.parked == r {
				c.finishResponse(r)
			}
		}
	}
}
