package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/voice/audio"
	"github.com/agentvoicebox/avb/voice/wav"
)

func callCmd() *cobra.Command {
	var server, key, in, out string
	var hints []string
	cmd := &cobra.Command{
		Use:   "call",
		Short: "Talk to the agent from a WAV file: stream it in real time, save the spoken reply as a WAV",
		Example: `  espeak-ng -w ask.wav "please book a meeting for tomorrow at ten"
  avb call --key "$AVB_API_KEY" --in ask.wav --out reply.wav && aplay reply.wav`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if key == "" {
				key = os.Getenv("AVB_API_KEY")
			}
			f, err := os.Open(in)
			if err != nil {
				return err
			}
			defer f.Close()
			pcm, rate, err := wav.Read(f)
			if err != nil {
				return fmt.Errorf("%s: %w", in, err)
			}
			pcm = audio.NewResampler(rate, 16000).Process(pcm, nil)
			pcm = append(pcm, make([]int16, 16000)...) // a second of silence ends the turn
			return talk(cmd, server, key, hints, pcm, out)
		},
	}
	cmd.Flags().StringVar(&server, "server", "http://localhost:8080", "avb server URL")
	cmd.Flags().StringVar(&key, "key", "", "API key with the realtime scope (default $AVB_API_KEY)")
	cmd.Flags().StringVar(&in, "in", "", "WAV file to say (16-bit PCM, mono)")
	cmd.Flags().StringVar(&out, "out", "reply.wav", "where to save the agent's reply")
	cmd.Flags().StringSliceVar(&hints, "hint", nil, "phrase hints for recognition (repeatable)")
	_ = cmd.MarkFlagRequired("in")
	return cmd
}

func talk(cmd *cobra.Command, server, key string, hints []string, pcm []int16, out string) error {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	p.SetHTTP2(true)
	client := avbv1connect.NewVoiceServiceClient(&http.Client{Transport: &http.Transport{Protocols: &p}}, server, connect.WithGRPC())
	ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
	defer cancel()
	stream := client.Converse(ctx)
	stream.RequestHeader().Set("X-API-Key", key)
	if err := stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Start{Start: &avbv1.SessionStart{
		Config: &avbv1.SessionConfig{PhraseHints: hints}}}}); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	go func() { // 20 ms frames, in real time, as a microphone would
		b := make([]byte, 0, 640)
		for i := 0; i < len(pcm); i += 320 {
			b = b[:0]
			for _, s := range pcm[i:min(i+320, len(pcm))] {
				b = binary.LittleEndian.AppendUint16(b, uint16(s))
			}
			if stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Audio{Audio: &avbv1.AudioAppend{Audio: b}}}) != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	var reply []int16
	w := cmd.ErrOrStderr()
	for {
		msg, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch ev := msg.GetEvent().GetEvent().(type) {
		case *avbv1.VoiceEvent_SessionStarted:
			fmt.Fprintf(w, "session %s\n", ev.SessionStarted.GetSession().GetId())
		case *avbv1.VoiceEvent_TranscriptFinal:
			fmt.Fprintf(w, "you:   %s\n", ev.TranscriptFinal.GetText())
		case *avbv1.VoiceEvent_ResponseAudioDelta:
			s, _ := audio.Decode(audio.Format{Encoding: audio.PCM16, SampleRate: 24000}, ev.ResponseAudioDelta.GetAudio(), nil)
			reply = append(reply, s...)
		case *avbv1.VoiceEvent_ResponseDone:
			fmt.Fprintf(w, "agent: %s\n(first audio %.1f ms after you stopped speaking)\n", ev.ResponseDone.GetText(), ev.ResponseDone.GetLatency().GetFirstByteMs())
			f, err := os.Create(out)
			if err != nil {
				return err
			}
			if err := wav.Write(f, reply, 24000); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			fmt.Fprintf(w, "reply saved to %s (%.1f s)\n", out, float64(len(reply))/24000)
			return stream.CloseRequest()
		case *avbv1.VoiceEvent_Error:
			fmt.Fprintf(w, "error: %s: %s\n", ev.Error.GetReason(), ev.Error.GetMessage())
		}
	}
}
