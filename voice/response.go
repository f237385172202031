package voice

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"time"

	"github.com/agentvoicebox/avb/voice/audio"
	"github.com/agentvoicebox/avb/voice/llm"
	"github.com/agentvoicebox/avb/voice/tts"
)

// response is one reply in progress: the model streams text, sentences go
// to speech as they complete, audio goes to the client as it is produced.
type response struct {
	id          int
	cancel      context.CancelFunc
	interrupted atomic.Bool
	text        strings.Builder
	usage       llm.Usage
	metrics     TurnMetrics
	firstAudio  time.Time
	err         error
}

func (r *response) interrupt() {
	r.interrupted.Store(true)
	r.cancel()
}

// startResponse begins a reply unless one is running.
func (c *Call) startResponse() {
	if c.resp != nil {
		return
	}
	c.nextResp++
	ctx, cancel := context.WithCancel(c.ctx)
	r := &response{id: c.nextResp, cancel: cancel}
	c.resp = r
	cfg := c.Config()
	req := llm.Request{Model: cfg.Model, Instructions: cfg.Instructions,
		Messages: append([]llm.Message(nil), c.history...)}
	speechEnd := c.speechEnd
	r.metrics.STTFinal = c.sttFinalAt.Sub(speechEnd)
	c.emit(Event{Type: ResponseStarted, ResponseID: r.id})
	go func() {
		r.err = c.respond(ctx, r, cfg, req, speechEnd)
		c.respDone <- r
	}()
}

func (c *Call) respond(ctx context.Context, r *response, cfg Config, req llm.Request, speechEnd time.Time) error {
	sentences := make(chan string, 16)
	speakDone := make(chan error, 1)
	go func() { speakDone <- c.speak(ctx, r, cfg, sentences, speechEnd) }()

	var split llm.Sentences
	first := true
	usage, err := c.prov.LLM.Stream(ctx, req, func(delta string) error {
		if first {
			r.metrics.LLMFirstToken = time.Since(speechEnd)
			first = false
		}
		r.text.WriteString(delta)
		if !c.emit(Event{Type: TextDelta, ResponseID: r.id, Text: delta}) {
			return context.Canceled
		}
		for _, s := range split.Add(delta) {
			select {
			case sentences <- s:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	if rest := split.Flush(); rest != "" && err == nil {
		sentences <- rest
	}
	close(sentences)
	r.usage = usage
	if serr := <-speakDone; err == nil {
		err = serr
	}
	return err
}

// speak synthesizes sentences in order and sends their audio in ~100 ms chunks.
func (c *Call) speak(ctx context.Context, r *response, cfg Config, sentences <-chan string, speechEnd time.Time) error {
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
			if r.firstAudio.IsZero() {
				r.firstAudio = time.Now()
				r.metrics.FirstByteSent = time.Since(speechEnd)
			}
			ms := float64(n) * 1000 / float64(cfg.Output.SampleRate)
			r.metrics.AudioOutMS += ms
			if !c.emit(Event{Type: AudioDelta, ResponseID: r.id, Audio: append([]byte(nil), out...), AudioMS: ms}) {
				return context.Canceled
			}
		}
		return nil
	}
	for s := range sentences {
		err := c.prov.TTS.Synthesize(ctx, tts.Request{Text: s, Voice: cfg.Voice}, func(samples []int16) error {
			if r.metrics.TTSFirstAudio == 0 {
				r.metrics.TTSFirstAudio = time.Since(speechEnd)
			}
			pending = rs.Process(samples, pending)
			return flush(false)
		})
		if err != nil {
			return err
		}
	}
	return flush(true)
}

// finishResponse reports a reply that ended, completely or not.
func (c *Call) finishResponse(r *response) {
	c.resp = nil
	interrupted := r.interrupted.Load()
	played := r.metrics.AudioOutMS
	if interrupted && !r.firstAudio.IsZero() {
		// The caller hears audio in real time from its first byte.
		played = min(played, float64(time.Since(r.firstAudio).Milliseconds()))
	}
	if text := r.text.String(); text != "" {
		c.history = append(c.history, llm.Message{Role: "assistant", Content: text})
	}
	ev := Event{Type: ResponseDone, ResponseID: r.id, Interrupted: interrupted, PlayedMS: played,
		Usage: r.usage, Metrics: r.metrics, Text: r.text.String()}
	if r.err != nil && !errors.Is(r.err, context.Canceled) {
		c.emit(Event{Type: Error, ResponseID: r.id, Err: r.err})
	}
	c.emit(ev)
	c.speechEnd = time.Time{}
}
