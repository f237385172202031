// Package tts turns text into speech. Providers stream audio as they
// synthesize it, so the first sound leaves before the sentence is done.
package tts

import (
	"context"
	"errors"
)

// Request is what to say.
type Request struct {
	Text  string
	Voice string // provider-specific voice name; "" for the default
}

// Synthesizer is a text-to-speech provider.
type Synthesizer interface {
	// SampleRate is the rate of the samples Synthesize emits (mono PCM16).
	SampleRate() int
	// Synthesize speaks req, calling emit with each chunk of samples as it is
	// produced. It stops early, returning ctx.Err(), when ctx is done, and
	// returns emit's error if emit fails.
	Synthesize(ctx context.Context, req Request, emit func(samples []int16) error) error
}

// ErrEmptyText: there is nothing to say.
var ErrEmptyText = errors.New("tts: empty text")
