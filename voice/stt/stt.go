// Package stt turns speech into text. A Session takes one utterance as it
// is spoken (16 kHz mono PCM16) and gives partial hypotheses while it runs
// and a final transcript at the end.
package stt

import "context"

// Options configure a session.
type Options struct {
	// Phrases, when set, restrict recognition to these phrases (grammar
	// mode): far more accurate for known prompts, such as menus and tests.
	Phrases []string
	// Language is a BCP 47 tag; providers may ignore it.
	Language string
}

// Session recognizes one utterance.
type Session interface {
	// Write feeds 16 kHz samples.
	Write(samples []int16) error
	// Partial returns the current best hypothesis ("" if none yet).
	Partial() string
	// Finish ends the utterance and returns the final transcript. The session
	// cannot be used afterwards.
	Finish() (string, error)
	// Close abandons the utterance (barge-in, hang-up) and frees the session.
	Close()
}

// Transcriber is a speech-to-text provider.
type Transcriber interface {
	Start(ctx context.Context, opts Options) (Session, error)
}

// SampleRate is the rate every Session consumes.
const SampleRate = 16000
