package llm_test

import (
	"context"
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
