package llm_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/voice/llm"
)

func TestScriptedIsDeterministic(t *testing.T) {
	t.Parallel()
	var got strings.Builder
	u, err := llm.DefaultScript.Stream(context.Background(), llm.Request{Messages: []llm.Message{{Role: "user", Content: "please book a meeting for tomorrow at ten"}}},
		func(d string) error { got.WriteString(d); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != "Sure. I booked the meeting for tomorrow at ten." || u.OutputTokens != 9 || u.InputTokens != 8 {
		t.Fatalf("reply %q usage %+v", got.String(), u)
	}
	if r := llm.DefaultScript.Reply("mumble"); r != llm.DefaultScript.Fallback {
		t.Fatalf("fallback: %q", r)
	}
}

// Splitting a streamed reply into sentences loses and reorders nothing,
// however the stream is chunked.
func TestPropertySentencesAreChunkingIndependent(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		words := rapid.SliceOfN(rapid.SampledFrom([]string{"hi", "there", "ok.", "sure!", "why?", "ten", "a"}), 1, 30).Draw(t, "words")
		text := strings.Join(words, " ")
		var s llm.Sentences
		var out []string
		for rest := text; rest != ""; {
			n := min(len(rest), rapid.IntRange(1, 7).Draw(t, "chunk"))
			out = append(out, s.Add(rest[:n])...)
			rest = rest[n:]
		}
		if f := s.Flush(); f != "" {
			out = append(out, f)
		}
		if strings.Join(out, " ") != text {
			t.Fatalf("sentences %q do not rebuild %q", out, text)
		}
		for _, sent := range out[:max(0, len(out)-1)] {
			if !slices.Contains([]byte(".!?"), sent[len(sent)-1]) {
				t.Fatalf("sentence %q ends mid-way", sent)
			}
		}
	})
}

// The scripted model's slot reader takes what it understands from any
// words and never fails on the rest.
func FuzzWhen(f *testing.F) {
	for _, s := range []string{"please book a meeting for tomorrow at ten", "at 3 pm on friday", "at", "at 99", "at ten thirty"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, user string) {
		got := llm.When(user)
		if tm, ok := got["time"].(string); ok && (len(tm) != 5 || tm[2] != ':') {
			t.Fatalf("time %q from %q", tm, user)
		}
	})
}

func TestWhen(t *testing.T) {
	for in, want := range map[string]string{
		"please book a meeting for tomorrow at ten": `map[day:tomorrow time:10:00]`,
		"book it at ten thirty on friday":           `map[day:friday time:10:30]`,
		"at 3 pm today":                             `map[day:today time:15:00]`,
		"sometime":                                  `map[]`,
	} {
		if got := fmt.Sprint(llm.When(in)); got != want {
			t.Errorf("%q: %s, want %s", in, got, want)
		}
	}
}

// Every phrase the scripted model offers a phrases-only recognizer is one
// it answers (no fallback), with the day and time its rule takes from it.
func TestScriptedPhrasesAreUnderstood(t *testing.T) {
	phrases := llm.DefaultScript.Phrases()
	if len(phrases) < 50 || len(phrases) > 400 {
		t.Fatalf("%d phrases", len(phrases))
	}
	seen := map[string]bool{}
	for _, p := range phrases {
		if seen[p] {
			t.Fatalf("%q twice", p)
		}
		seen[p] = true
		if strings.ContainsAny(p, "{}") {
			t.Fatalf("slot left in %q", p)
		}
		if llm.DefaultScript.Reply(p) == llm.DefaultScript.Fallback {
			t.Errorf("%q is not understood", p)
		}
	}
	if !seen["please book a meeting for tomorrow at ten"] {
		t.Fatal("the demo request is not among the phrases")
	}
	if got := llm.When("book a meeting for friday at three"); got["day"] != "friday" || got["time"] != "03:00" {
		t.Fatalf("when: %v", got)
	}
}
