package vad_test

import (
	"math"
	"testing"

	"github.com/agentvoicebox/avb/voice/vad"
)

func tone(ms int, amp float64) [][]int16 {
	var frames [][]int16
	for f := 0; f < ms/vad.FrameMS; f++ {
		fr := make([]int16, 320)
		for i := range fr {
			fr[i] = int16(amp * math.Sin(2*math.Pi*220*float64(f*320+i)/16000))
		}
		frames = append(frames, fr)
	}
	return frames
}

func TestDetectsTurnsWithPaddingAndSilence(t *testing.T) {
	t.Parallel()
	d := vad.New(vad.Config{})
	var events []vad.Event
	var at []int
	feed := func(frames [][]int16) {
		for _, f := range frames {
			if e := d.Process(f); e != vad.None {
				events = append(events, e)
				at = append(at, len(events))
			}
		}
	}
	feed(tone(400, 0))    // silence
	feed(tone(600, 8000)) // speech
	if len(events) != 1 || events[0] != vad.SpeechStarted {
		t.Fatalf("events %v", events)
	}
	if p := d.Prefix(); len(p) < 300/vad.FrameMS {
		t.Fatalf("prefix of %d frames, want the 300 ms padding", len(p))
	}
	feed(tone(300, 0)) // a pause shorter than the silence duration
	if len(events) != 1 {
		t.Fatalf("a 300 ms pause ended the turn: %v", events)
	}
	feed(tone(600, 0))
	if len(events) != 2 || events[1] != vad.SpeechStopped {
		t.Fatalf("events %v", events)
	}
	feed(tone(20, 20000)) // a click
	feed(tone(200, 0))
	if len(events) != 2 {
		t.Fatalf("a 20 ms click started a turn: %v", events)
	}
	quiet := vad.New(vad.Config{Threshold: 0.9})
	for _, f := range tone(500, 300) {
		if quiet.Process(f) != vad.None {
			t.Fatal("faint sound passed a high threshold")
		}
	}
}
