package voice

import (
	"context"
	"errors"
	"sync"

	"github.com/agentvoicebox/avb/voice/llm"
	"github.com/agentvoicebox/avb/voice/stt"
	"github.com/agentvoicebox/avb/voice/tts"
)

// Meter counts provider requests by provider and outcome ("ok", "error",
// "canceled": the caller barged in or hung up), and language-model tokens.
type Meter struct {
	STT, TTS, LLM func(provider, outcome string)
	Tokens        func(provider, direction string, n int)
}

// outcome names how a provider request ended.
func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "error"
}

// Metered returns p with every request counted under the given provider
// names.
func Metered(p Providers, m Meter, sttName, ttsName string) Providers {
	if p.STT != nil && m.STT != nil {
		p.STT = meteredSTT{p.STT, sttName, m.STT}
	}
	if p.TTS != nil && m.TTS != nil {
		p.TTS = meteredTTS{p.TTS, ttsName, m.TTS}
	}
	return p
}

// MeteredModel counts a language model's requests and tokens.
func MeteredModel(model llm.Model, name string, m Meter) llm.Model {
	if m.LLM == nil {
		return model
	}
	return meteredLLM{model, name, m}
}

type meteredSTT struct {
	stt.Transcriber
	name  string
	count func(provider, outcome string)
}

// Prepare passes phrase hints on to a recognizer that takes them ahead.
func (m meteredSTT) Prepare(phrases []string) {
	if p, ok := m.Transcriber.(preparer); ok {
		p.Prepare(phrases)
	}
}

func (m meteredSTT) Start(ctx context.Context, opts stt.Options) (stt.Session, error) {
	s, err := m.Transcriber.Start(ctx, opts)
	if err != nil {
		m.count(m.name, outcome(err))
		return nil, err
	}
	return &meteredSession{Session: s, done: func(err error) { m.count(m.name, outcome(err)) }}, nil
}

// meteredSession counts one utterance once: finished (ok or error) or
// abandoned.
type meteredSession struct {
	stt.Session
	done func(error)
	once sync.Once
}

func (s *meteredSession) Finish() (string, error) {
	text, err := s.Session.Finish()
	s.once.Do(func() { s.done(err) })
	return text, err
}

func (s *meteredSession) Close() {
	s.once.Do(func() { s.done(context.Canceled) })
	s.Session.Close()
}

type meteredTTS struct {
	tts.Synthesizer
	name  string
	count func(provider, outcome string)
}

func (m meteredTTS) Synthesize(ctx context.Context, req tts.Request, emit func(samples []int16) error) error {
	err := m.Synthesizer.Synthesize(ctx, req, emit)
	m.count(m.name, outcome(err))
	return err
}

type meteredLLM struct {
	llm.Model
	name string
	m    Meter
}

func (m meteredLLM) Stream(ctx context.Context, req llm.Request, emit func(delta string) error) (llm.Usage, error) {
	u, err := m.Model.Stream(ctx, req, emit)
	m.m.LLM(m.name, outcome(err))
	if m.m.Tokens != nil {
		m.m.Tokens(m.name, "input", u.InputTokens)
		m.m.Tokens(m.name, "output", u.OutputTokens)
	}
	return u, err
}
