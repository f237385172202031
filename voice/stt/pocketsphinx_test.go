package stt_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/voice/audio"
	"github.com/agentvoicebox/avb/voice/stt"
	"github.com/agentvoicebox/avb/voice/tts"
)

const phrase = "please book a meeting for tomorrow at ten"

var hints = []string{phrase, "cancel my meeting", "what is the weather today", "yes", "no"}

// speak synthesizes text with espeak-ng at 16 kHz.
func speak(t testing.TB, text string) []int16 {
	t.Helper()
	e, err := tts.NewEspeak()
	if err != nil {
		t.Fatal(err)
	}
	r := audio.NewResampler(e.SampleRate(), stt.SampleRate)
	var out []int16
	if err := e.Synthesize(context.Background(), tts.Request{Text: text}, func(s []int16) error {
		out = r.Process(s, out)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// espeak-ng speech, streamed in 20 ms frames, is recognized exactly in
// grammar (phrase hints) mode, with a partial hypothesis on the way.
func TestRecognizesSynthesizedSpeech(t *testing.T) {
	pcm := speak(t, phrase)
	p := stt.NewPocketsphinx("", 2)
	if err := p.Warm(hints); err != nil {
		t.Fatal(err)
	}
	for round := range 2 { // the second round reuses the pooled decoder
		s, err := p.Start(context.Background(), stt.Options{Phrases: hints})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		partial := ""
		for i := 0; i < len(pcm); i += 320 {
			if err := s.Write(pcm[i:min(i+320, len(pcm))]); err != nil {
				t.Fatal(err)
			}
			if p := s.Partial(); p != "" {
				partial = p
			}
		}
		text, err := s.Finish()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %.1f s of audio decoded in %s", round, float64(len(pcm))/16000, time.Since(start))
		if text != phrase {
			t.Fatalf("heard %q, want %q", text, phrase)
		}
		if partial == "" {
			t.Fatal("no partial hypothesis while decoding")
		}
	}
}

// BenchmarkDecoderStart is what a recognizer costs to create when none is
// pooled: a grammar decoder (phrase hints: only their words, no language
// model) against one with the full language model.
func BenchmarkDecoderStart(b *testing.B) {
	for _, bc := range []struct {
		name    string
		phrases []string
	}{{"grammar", []string{"please book a meeting for tomorrow at ten", "hello"}}, {"language_model", nil}} {
		b.Run(bc.name, func(b *testing.B) {
			p := stt.NewPocketsphinx("", 0) // nothing pooled: every start makes a decoder
			for b.Loop() {
				s, err := p.Start(context.Background(), stt.Options{Phrases: bc.phrases})
				if err != nil {
					b.Fatal(err)
				}
				s.Close()
			}
		})
	}
}

// Many calls starting recognition at once (decoders made in parallel, none
// pooled) neither crash the process nor mix up their utterances.
func TestConcurrentDecoderStarts(t *testing.T) {
	p := stt.NewPocketsphinx("", 0)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			phrases := []string{"hello", "cancel my meeting"}
			if i%8 == 0 {
				phrases = nil // the language model decoder too
			}
			s, err := p.Start(context.Background(), stt.Options{Phrases: phrases})
			if err != nil {
				t.Error(err)
				return
			}
			s.Close()
		}()
	}
	wg.Wait()
}

// BenchmarkGrammarDecode is the recognizer's cost per utterance, the
// largest CPU cost of a full-pipeline call: the request (about 2.5 s of
// espeak-ng speech) decoded in 20 ms frames by a pooled grammar decoder.
func BenchmarkGrammarDecode(b *testing.B) {
	pcm := speak(b, phrase)
	p := stt.NewPocketsphinx("", 2)
	if err := p.Warm(hints); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		s, err := p.Start(context.Background(), stt.Options{Phrases: hints})
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < len(pcm); i += 320 {
			_ = s.Write(pcm[i:min(i+320, len(pcm))])
		}
		if text, _ := s.Finish(); text != phrase {
			b.Fatalf("heard %q", text)
		}
	}
	b.ReportMetric(float64(len(pcm))/16000, "audio-s/op")
}
