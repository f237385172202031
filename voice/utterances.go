package voice

import (
	"context"

	"github.com/agentvoicebox/avb/voice/stt"
	"github.com/agentvoicebox/avb/voice/vad"
)

// Utterances recognizes 16 kHz audio utterance by utterance, split by voice
// activity (or, with no detector, one utterance until Flush): the streaming
// Transcribe RPC and batch transcription both use it.
type Utterances struct {
	STT  stt.Transcriber
	Opts stt.Options
	// VAD splits utterances; nil: everything is one utterance.
	VAD *vad.Detector
	// OnPartial receives a changed hypothesis while an utterance runs.
	OnPartial func(text string) error
	// OnFinal receives each utterance's transcript and where it lies in the
	// audio (milliseconds).
	OnFinal func(text string, startMS, endMS float64) error

	sess       stt.Session
	pos, start float64
	last       string
}

// FrameSamples is the frame Frame takes: 20 ms at 16 kHz.
const FrameSamples = frameSamples

// Frame takes the next 20 ms frame.
func (u *Utterances) Frame(ctx context.Context, f []int16) error {
	u.pos += vad.FrameMS
	if u.VAD == nil {
		return u.feed(ctx, f)
	}
	switch u.VAD.Process(f) {
	case vad.SpeechStarted:
		for _, p := range u.VAD.Prefix() {
			if err := u.feed(ctx, p); err != nil {
				return err
			}
		}
	case vad.SpeechStopped:
		return u.Flush()
	default:
		if u.VAD.Speaking() {
			return u.feed(ctx, f)
		}
	}
	return nil
}

func (u *Utterances) feed(ctx context.Context, f []int16) error {
	if u.sess == nil {
		s, err := u.STT.Start(ctx, u.Opts)
		if err != nil {
			return err
		}
		u.sess, u.start, u.last = s, u.pos, ""
	}
	if err := u.sess.Write(f); err != nil {
		return err
	}
	if u.OnPartial != nil {
		if p := u.sess.Partial(); p != "" && p != u.last {
			u.last = p
			return u.OnPartial(p)
		}
	}
	return nil
}

// Flush ends the utterance in progress, if any, and reports it.
func (u *Utterances) Flush() error {
	if u.sess == nil {
		return nil
	}
	text, err := u.sess.Finish()
	u.sess = nil
	if err != nil {
		return err
	}
	return u.OnFinal(text, u.start, u.pos)
}

// Close abandons the utterance in progress.
func (u *Utterances) Close() {
	if u.sess != nil {
		u.sess.Close()
		u.sess = nil
	}
}
