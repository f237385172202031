package server

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/agentvoicebox/avb/platform/metrics"
	"github.com/agentvoicebox/avb/voice"
)

// Interrupted turns never reach the latency histograms: only answered
// turns say how fast the agent answers.
func TestInterruptedTurnsLeftOutOfLatency(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := &voiceServer{Voice: Voice{Metrics: metrics.New(reg)}}
	m := voice.TurnMetrics{VADEnd: 500 * time.Millisecond, STTFinal: time.Millisecond, LLMFirstToken: 2 * time.Millisecond,
		TTSFirstAudio: 3 * time.Millisecond, FirstByteSent: 4 * time.Millisecond}
	s.observeTurn(voice.Event{Type: voice.ResponseDone, Metrics: m})
	for range 3 {
		s.observeTurn(voice.Event{Type: voice.ResponseDone, Metrics: voice.TurnMetrics{FirstByteSent: time.Hour}, Interrupted: true})
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, f := range families {
		if f.GetName() != "voice_turn_latency_seconds" {
			continue
		}
		for _, mt := range f.GetMetric() {
			counts[stage(mt)] = mt.GetHistogram().GetSampleCount()
			if mt.GetHistogram().GetSampleSum() > 1 {
				t.Fatalf("%s: an interrupted turn's hour was observed", stage(mt))
			}
		}
	}
	for _, st := range []string{"vad_end", "stt_final", "llm_first_token", "tts_first_audio", "first_byte"} {
		if counts[st] != 1 {
			t.Fatalf("stage %s observed %d times, want 1 (%v)", st, counts[st], counts)
		}
	}
}

func stage(m *dto.Metric) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == "stage" {
			return l.GetValue()
		}
	}
	return ""
}
