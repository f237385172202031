package server

import (
	"testing"

	"google.golang.org/protobuf/proto"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/voice"
	"github.com/agentvoicebox/avb/voice/audio"
)

func TestCallConfigDefaultsAndErrors(t *testing.T) {
	t.Parallel()
	c, err := callConfig(nil)
	if err != nil || c.Input != defaultInput || c.Output != defaultOutput || c.Turn != voice.ServerVAD || !c.CreateResponse || !c.InterruptResponse {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	no := false
	c, err = callConfig(&avbv1.SessionConfig{
		InputAudioFormat: &avbv1.AudioFormat{Encoding: avbv1.AudioEncoding_AUDIO_ENCODING_MULAW},
		TurnDetection:    &avbv1.TurnDetection{Mode: avbv1.TurnDetectionMode_TURN_DETECTION_MODE_MANUAL, CreateResponse: &no},
	})
	if err != nil || c.Input != (audio.Format{Encoding: audio.MuLaw, SampleRate: 8000}) || c.Turn != voice.Manual || c.CreateResponse {
		t.Fatalf("mulaw manual: %+v %v", c, err)
	}
	for _, bad := range []*avbv1.SessionConfig{
		{InputAudioFormat: &avbv1.AudioFormat{Encoding: avbv1.AudioEncoding_AUDIO_ENCODING_MULAW, SampleRate: 16000}},
		{OutputAudioFormat: &avbv1.AudioFormat{Encoding: avbv1.AudioEncoding_AUDIO_ENCODING_PCM16, SampleRate: 44100}},
	} {
		if _, err := callConfig(bad); err == nil {
			t.Errorf("accepted %v", bad)
		}
	}
}

// FuzzClientMessages feeds arbitrary bytes as client messages through the
// decoding and configuration paths a live stream uses.
func FuzzClientMessages(f *testing.F) {
	seed, _ := proto.Marshal(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Start{Start: &avbv1.SessionStart{
		Config: &avbv1.SessionConfig{PhraseHints: []string{"hello"}}}}})
	f.Add(seed)
	ctl, _ := proto.Marshal(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Control{Control: &avbv1.ClientControl{
		Control: &avbv1.ClientControl_Update{Update: &avbv1.SessionConfig{TurnDetection: &avbv1.TurnDetection{Threshold: 2}}}}}})
	f.Add(ctl)
	f.Fuzz(func(t *testing.T, data []byte) {
		var msg avbv1.ConverseRequest
		if proto.Unmarshal(data, &msg) != nil {
			return
		}
		for _, cfg := range []*avbv1.SessionConfig{msg.GetStart().GetConfig(), msg.GetControl().GetUpdate()} {
			c, err := callConfig(cfg)
			if err != nil {
				continue
			}
			if c.Input.Validate() != nil || c.Output.Validate() != nil {
				t.Fatalf("accepted an invalid format: %+v", c)
			}
		}
	})
}
