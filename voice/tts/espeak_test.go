package tts_test

import (
	"context"
	"errors"
	"testing"

	"github.com/agentvoicebox/avb/voice/tts"
)

func TestEspeakStreamsAndStops(t *testing.T) {
	for _, streaming := range []bool{false, true} {
		t.Run(map[bool]string{false: "buffered", true: "streaming"}[streaming], func(t *testing.T) {
			testEspeak(t, streaming)
		})
	}
}

func testEspeak(t *testing.T, streaming bool) {
	e, err := tts.NewEspeak()
	if err != nil {
		t.Fatal(err)
	}
	e.Streaming = streaming
	if e.SampleRate() != 22050 {
		t.Fatalf("rate %d", e.SampleRate())
	}
	chunks, samples := 0, 0
	if err := e.Synthesize(context.Background(), tts.Request{Text: "Hello there. How can I help you today?"}, func(s []int16) error {
		chunks++
		samples += len(s)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if chunks < 2 || samples < 22050 {
		t.Fatalf("%d chunks, %d samples: not streamed speech", chunks, samples)
	}

	// Cancelling stops synthesis at the next buffer.
	ctx, cancel := context.WithCancel(context.Background())
	got := 0
	err = e.Synthesize(ctx, tts.Request{Text: "This is a long sentence that will be cut off before it ends, because the caller barged in."}, func(s []int16) error {
		got++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) || got != 1 {
		t.Fatalf("after cancel: %v, %d chunks", err, got)
	}
	if err := e.Synthesize(context.Background(), tts.Request{Text: "x", Voice: "no-such-voice"}, func([]int16) error { return nil }); err == nil {
		t.Fatal("unknown voice accepted")
	}
}
