package server

import (
	"fmt"
	"time"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/voice"
	"github.com/agentvoicebox/avb/voice/audio"
	"github.com/agentvoicebox/avb/voice/vad"
)

// Defaults of a session configuration.
var (
	defaultInput  = audio.Format{Encoding: audio.PCM16, SampleRate: 16000}
	defaultOutput = audio.Format{Encoding: audio.PCM16, SampleRate: 24000}
)

func audioFormat(f *avbv1.AudioFormat, def audio.Format) audio.Format {
	if f == nil || f.GetEncoding() == avbv1.AudioEncoding_AUDIO_ENCODING_UNSPECIFIED {
		return def
	}
	out := audio.Format{SampleRate: int(f.GetSampleRate())}
	switch f.GetEncoding() {
	case avbv1.AudioEncoding_AUDIO_ENCODING_PCM16:
		out.Encoding = audio.PCM16
		if out.SampleRate == 0 {
			out.SampleRate = def.SampleRate
		}
	case avbv1.AudioEncoding_AUDIO_ENCODING_MULAW:
		out.Encoding = audio.MuLaw
	case avbv1.AudioEncoding_AUDIO_ENCODING_ALAW:
		out.Encoding = audio.ALaw
	}
	if out.Encoding != audio.PCM16 && out.SampleRate == 0 {
		out.SampleRate = 8000
	}
	return out
}

// idleTimeout is a session's idle timeout (0: the server's default).
func idleTimeout(pc *avbv1.SessionConfig) time.Duration {
	return time.Duration(pc.GetTurnDetection().GetIdleTimeoutSeconds()) * time.Second
}

// callConfig turns the contract's session configuration into the engine's.
func callConfig(pc *avbv1.SessionConfig) (voice.Config, error) {
	c := voice.Config{
		Input:        audioFormat(pc.GetInputAudioFormat(), defaultInput),
		Output:       audioFormat(pc.GetOutputAudioFormat(), defaultOutput),
		Voice:        pc.GetVoice(),
		Model:        pc.GetModel(),
		Instructions: pc.GetInstructions(),
		Phrases:      pc.GetPhraseHints(),
	}
	if err := c.Input.Validate(); err != nil {
		return c, fmt.Errorf("input_audio_format: %w", err)
	}
	if err := c.Output.Validate(); err != nil {
		return c, fmt.Errorf("output_audio_format: %w", err)
	}
	td := pc.GetTurnDetection()
	if td.GetMode() == avbv1.TurnDetectionMode_TURN_DETECTION_MODE_MANUAL {
		c.Turn = voice.Manual
	}
	c.VAD = vad.Config{Threshold: float64(td.GetThreshold()), PrefixPaddingMS: int(td.GetPrefixPaddingMs()),
		SilenceDurationMS: int(td.GetSilenceDurationMs())}
	c.CreateResponse = td == nil || td.CreateResponse == nil || td.GetCreateResponse()
	c.InterruptResponse = td == nil || td.InterruptResponse == nil || td.GetInterruptResponse()
	c.MinInterruptionMS = int(td.GetMinInterruptionMs())
	c.ResumeFalseInterruption = td.GetResumeFalseInterruption()
	c.PreemptiveGeneration = td.GetPreemptiveGeneration()
	c.Echo = pc.GetMode() == avbv1.SessionMode_SESSION_MODE_ECHO
	return c, nil
}
