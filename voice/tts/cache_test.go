package tts

import (
	"context"
	"errors"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// counting is a synthesizer behind the port: "speech" is the text's bytes,
// one sample each, and it counts its syntheses.
type counting struct{ calls int }

func (c *counting) SampleRate() int { return 10 }
func (c *counting) Synthesize(ctx context.Context, req Request, emit func([]int16) error) error {
	c.calls++
	s := make([]int16, len(req.Text))
	for i := range req.Text {
		s[i] = int16(req.Text[i])
	}
	return emit(s)
}

func say(t *testing.T, c Synthesizer, voice, text string) []int16 {
	t.Helper()
	var out []int16
	if err := c.Synthesize(context.Background(), Request{Text: text, Voice: voice}, func(s []int16) error {
		out = append(out, s...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// A sentence said again is replayed, the same samples, with no synthesis;
// another voice is another entry.
func TestCacheReplays(t *testing.T) {
	next := &counting{}
	c := NewCache(next, 1<<20)
	hits := 0
	c.OnHit = func() { hits++ }
	first := say(t, c, "en-us", "Could you say that again?")
	again := say(t, c, "en-us", " Could you  say that again? ")
	if !slices.Equal(first, again) || next.calls != 1 || hits != 1 {
		t.Fatalf("replayed %v, %d syntheses, %d hits", slices.Equal(first, again), next.calls, hits)
	}
	say(t, c, "en-gb", "Could you say that again?")
	if next.calls != 2 {
		t.Fatalf("%d syntheses: a voice shares another's entry", next.calls)
	}
}

// The real synthesizer's sentence replays sample for sample.
func TestCacheReplaysEspeak(t *testing.T) {
	e, err := NewEspeak()
	if err != nil {
		t.Fatal(err)
	}
	c := NewCache(e, 8<<20)
	first := say(t, c, "", "Hello. How can I help you today?")
	if again := say(t, c, "", "Hello. How can I help you today?"); !slices.Equal(first, again) || len(first) == 0 {
		t.Fatal("the replay differs from the synthesis")
	}
}

// A cancelled replay stops within one 100 ms chunk.
func TestCacheReplayStopsOnCancel(t *testing.T) {
	c := NewCache(&counting{}, 1<<20)
	text := string(make([]byte, 100)) // 100 samples: ten chunks of 10
	say(t, c, "", text)
	ctx, cancel := context.WithCancel(context.Background())
	chunks := 0
	err := c.Synthesize(ctx, Request{Text: text}, func([]int16) error {
		chunks++
		if chunks == 2 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || chunks != 2 {
		t.Fatalf("%v after %d chunks", err, chunks)
	}
}

// Whatever is said, the cache never holds more than its bound, what it
// replays is what was synthesized, and a failed synthesis is not kept.
func TestCacheProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		maxBytes := int64(rapid.IntRange(16, 400).Draw(t, "max"))
		next := &counting{}
		c := NewCache(next, maxBytes)
		texts := rapid.SliceOfN(rapid.StringMatching(`[a-e]{1,20}`), 1, 60).Draw(t, "texts")
		for _, text := range texts {
			var got []int16
			_ = c.Synthesize(context.Background(), Request{Text: text}, func(s []int16) error { got = append(got, s...); return nil })
			want := make([]int16, len(text))
			for i := range text {
				want[i] = int16(text[i])
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%q: got %v", text, got)
			}
			if c.Bytes() > maxBytes {
				t.Fatalf("holds %d bytes, bound %d", c.Bytes(), maxBytes)
			}
		}
		failing := NewCache(&failingSynth{}, maxBytes)
		_ = failing.Synthesize(context.Background(), Request{Text: "x"}, func([]int16) error { return nil })
		if failing.Bytes() != 0 {
			t.Fatal("a failed synthesis was kept")
		}
	})
}

type failingSynth struct{ counting }

func (f *failingSynth) Synthesize(ctx context.Context, req Request, emit func([]int16) error) error {
	_ = f.counting.Synthesize(ctx, req, emit)
	return errors.New("provider failed")
}
