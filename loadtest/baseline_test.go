package loadtest

import (
	"context"
	"testing"
	"time"
)

// The baseline is driven exactly like avb: every frame comes back, and the
// report reads the same.
func TestBaselineEchoes(t *testing.T) {
	url, stop, err := StartBaseline()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	utt := make([]int16, rate)
	for i := range utt {
		utt[i] = int16(i * 31)
	}
	rep, err := Run(context.Background(), Config{Server: url, Calls: 4, Duration: time.Second, Ramp: 100 * time.Millisecond, Mode: Passthrough, Utterance: utt})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed > 0 || rep.Opened != 4 || rep.FramesSent != 4*50 || rep.FramesEchoed != rep.FramesSent {
		t.Fatalf("baseline: %s", rep)
	}
	t.Log(rep)
}
