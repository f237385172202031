package server

import (
	"context"
	"errors"
	"io"

	"connectrpc.com/connect"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/voice"
	"github.com/agentvoicebox/avb/voice/audio"
	"github.com/agentvoicebox/avb/voice/stt"
	"github.com/agentvoicebox/avb/voice/tts"
	"github.com/agentvoicebox/avb/voice/vad"
)

// Synthesize speaks text with the TTS provider, streaming ~100 ms chunks.
func (s *voiceServer) Synthesize(ctx context.Context, req *connect.Request[avbv1.SynthesizeRequest], stream *connect.ServerStream[avbv1.SynthesizeResponse]) error {
	out := audioFormat(req.Msg.GetOutputAudioFormat(), defaultOutput)
	if err := out.Validate(); err != nil {
		return invalidArgument("output_audio_format: " + err.Error())
	}
	rs := audio.NewResampler(s.Providers.TTS.SampleRate(), out.SampleRate)
	chunk := out.SampleRate / 10
	var pending []int16
	var buf []byte
	send := func(all bool) error {
		for len(pending) >= chunk || (all && len(pending) > 0) {
			n := min(chunk, len(pending))
			buf, _ = audio.Encode(out, pending[:n], buf[:0])
			pending = pending[n:]
			if err := stream.Send(&avbv1.SynthesizeResponse{Audio: buf, AudioMs: float64(n) * 1000 / float64(out.SampleRate)}); err != nil {
				return err
			}
		}
		return nil
	}
	err := s.Providers.TTS.Synthesize(ctx, tts.Request{Text: req.Msg.GetText(), Voice: req.Msg.GetVoice()}, func(samples []int16) error {
		pending = rs.Process(samples, pending)
		return send(false)
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return invalidArgument(err.Error())
	}
	return send(true)
}

// Transcribe recognizes streamed audio utterance by utterance.
func (s *voiceServer) Transcribe(ctx context.Context, stream *connect.BidiStream[avbv1.TranscribeRequest, avbv1.TranscribeResponse]) error {
	first, err := stream.Receive()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return err
	}
	conf := first.GetConfig()
	if conf == nil {
		return invalidArgument("the first message must be config")
	}
	in := audioFormat(conf.GetInputAudioFormat(), defaultInput)
	if err := in.Validate(); err != nil {
		return invalidArgument("input_audio_format: " + err.Error())
	}
	td := conf.GetTurnDetection()
	manual := td.GetMode() == avbv1.TurnDetectionMode_TURN_DETECTION_MODE_MANUAL
	det := vad.New(vad.Config{Threshold: float64(td.GetThreshold()), PrefixPaddingMS: int(td.GetPrefixPaddingMs()), SilenceDurationMS: int(td.GetSilenceDurationMs())})
	rs := audio.NewResampler(in.SampleRate, stt.SampleRate)
	u := &voice.Utterances{STT: s.Providers.STT, Opts: stt.Options{Phrases: conf.GetPhraseHints()},
		OnPartial: func(text string) error { return stream.Send(&avbv1.TranscribeResponse{Text: text}) },
		OnFinal: func(text string, start, end float64) error {
			return stream.Send(&avbv1.TranscribeResponse{Text: text, IsFinal: true, StartMs: start, EndMs: end})
		}}
	if !manual {
		u.VAD = det
	}
	defer u.Close()
	var rest, dec []int16
	for {
		msg, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			return u.Flush()
		}
		if err != nil {
			return err
		}
		b := msg.GetAudio()
		if len(b) > voice.MaxFrameBytes {
			return voiceError(voice.ErrFrameTooLarge)
		}
		if dec, err = audio.Decode(in, b, dec); err != nil {
			return invalidAudio(err)
		}
		rest = rs.Process(dec, rest)
		for len(rest) >= voice.FrameSamples {
			if err := u.Frame(ctx, rest[:voice.FrameSamples]); err != nil {
				return err
			}
			rest = rest[voice.FrameSamples:]
		}
		rest = append([]int16(nil), rest...)
	}
}
