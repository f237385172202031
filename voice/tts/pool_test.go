package tts_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/voice/tts"
)

// The test binary doubles as the worker: AVB_TTS_TEST_WORKER picks how.
func TestMain(m *testing.M) {
	switch os.Getenv("AVB_TTS_TEST_WORKER") {
	case "":
		os.Exit(m.Run())
	case "espeak":
		e, err := tts.NewEspeak()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		e.Streaming = true
		if err := tts.ServeWorker(os.Stdin, os.Stdout, e); err != nil {
			os.Exit(1)
		}
	case "hang": // speaks one buffer, then neither speaks nor stops
		_ = tts.ServeWorker(os.Stdin, os.Stdout, hanging{})
	case "crash": // dies in the middle of a sentence
		_ = tts.ServeWorker(os.Stdin, os.Stdout, crashing{})
	}
	os.Exit(0)
}

type hanging struct{}

func (hanging) SampleRate() int { return 8000 }
func (hanging) Synthesize(_ context.Context, _ tts.Request, emit func([]int16) error) error {
	_ = emit(make([]int16, 160))
	select {}
}

type crashing struct{}

func (crashing) SampleRate() int { return 8000 }
func (crashing) Synthesize(_ context.Context, _ tts.Request, emit func([]int16) error) error {
	_ = emit(make([]int16, 160))
	os.Exit(3)
	return nil
}

func workers(kind string) func() *exec.Cmd {
	return func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "AVB_TTS_TEST_WORKER="+kind)
		return cmd
	}
}

func newPool(t testing.TB, size int, kind string) *tts.Pool {
	t.Helper()
	p, err := tts.NewPool(size, workers(kind))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// The pool says what espeak-ng in process says (to within 5% of its length,
// or 50 ms: espeak-ng carries a little state from one sentence to the
// next), from
// several calls at once; a cancelled synthesis stops within a buffer and
// its worker serves the next one.
func TestPoolSpeaksLikeEspeak(t *testing.T) {
	local, err := tts.NewEspeak()
	if err != nil {
		t.Fatal(err)
	}
	p := newPool(t, 2, "espeak")
	if p.SampleRate() != local.SampleRate() {
		t.Fatalf("rate %d, in process %d", p.SampleRate(), local.SampleRate())
	}
	say := func(s tts.Synthesizer, text string) []int16 {
		var out []int16
		if err := s.Synthesize(context.Background(), tts.Request{Text: text}, func(b []int16) error { out = append(out, b...); return nil }); err != nil {
			t.Error(err)
		}
		return out
	}
	texts := []string{"Hello there. How can I help you today?", "I have booked the meeting for tomorrow at ten.", "Could you say that again?", "Goodbye."}
	want := map[string][]int16{}
	for _, text := range texts {
		want[text] = say(local, text)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			text := texts[i%len(texts)]
			if got := say(p, text); !alike(got, want[text]) {
				t.Errorf("%q: %d samples from the pool, %d in process", text, len(got), len(want[text]))
			}
		})
	}
	wg.Wait()

	ctx, cancel := context.WithCancel(context.Background())
	chunks := 0
	err = p.Synthesize(ctx, tts.Request{Text: "This is a long sentence that will be cut off before it ends, because the caller barged in."}, func([]int16) error {
		chunks++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) || chunks != 1 {
		t.Fatalf("after cancel: %v, %d chunks", err, chunks)
	}
	stop := errors.New("enough")
	if err := p.Synthesize(context.Background(), tts.Request{Text: texts[0]}, func([]int16) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("emit's error: %v", err)
	}
	for range 2 { // both workers still serve
		if got := say(p, texts[3]); !alike(got, want[texts[3]]) {
			t.Fatal("a worker after a cancel says something else")
		}
	}
	if err := p.Synthesize(context.Background(), tts.Request{Text: "x", Voice: "no-such-voice"}, func([]int16) error { return nil }); err == nil {
		t.Fatal("unknown voice accepted")
	}
}

// A worker that stops answering is killed once a cancel goes unanswered
// (within cancelWait), and one that dies mid-sentence fails that sentence;
// either way the next synthesis gets a fresh worker.
func TestPoolReplacesHungAndDeadWorkers(t *testing.T) {
	for _, kind := range []string{"hang", "crash"} {
		t.Run(kind, func(t *testing.T) {
			p := newPool(t, 1, kind)
			for range 2 {
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				start := time.Now()
				err := p.Synthesize(ctx, tts.Request{Text: "hello"}, func([]int16) error { return nil })
				cancel()
				if err == nil || time.Since(start) > 2*time.Second {
					t.Fatalf("after %v: %v", time.Since(start), err)
				}
			}
		})
	}
}

// alike: the same speech, give or take 5% of its length.
// alike: lengths within 5% of b's, or 50 ms (22 050 Hz) for a short
// sentence, where espeak-ng's state from the sentence before (a pause, a
// breath) weighs more than 5%.
func alike(a, b []int16) bool {
	d := max(len(a)-len(b), len(b)-len(a))
	return len(b) > 0 && (d*20 <= len(b) || d <= 1102)
}

// BenchmarkSynthesisParallel: sentences synthesized per second with every
// core asking, in process (one at a time) against the worker pool (one per
// core).
func BenchmarkSynthesisParallel(b *testing.B) {
	for name, s := range synthesizers(b, 2) {
		b.Run(name, func(b *testing.B) {
			b.SetParallelism(2)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := s.Synthesize(context.Background(), tts.Request{Text: "I have booked the meeting for tomorrow at ten."}, func([]int16) error { return nil }); err != nil {
						b.Error(err)
					}
				}
			})
		})
	}
}

// BenchmarkSynthesisSerial: one sentence at a time, in process against one
// worker: the cost of the process hop.
func BenchmarkSynthesisSerial(b *testing.B) {
	for name, s := range synthesizers(b, 1) {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if err := s.Synthesize(context.Background(), tts.Request{Text: "I have booked the meeting for tomorrow at ten."}, func([]int16) error { return nil }); err != nil {
					b.Error(err)
				}
			}
		})
	}
}

// synthesizers are espeak-ng in process and a pool of workers of size.
func synthesizers(b *testing.B, size int) map[string]tts.Synthesizer {
	local, err := tts.NewEspeak()
	if err != nil {
		b.Fatal(err)
	}
	pool := newPool(b, size, "espeak")
	return map[string]tts.Synthesizer{"in-process": local, "pool": pool}
}
