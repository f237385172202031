package app_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/voice/audio"
	"github.com/agentvoicebox/avb/voice/wav"
)

// A real softphone: baresip (Debian) calls avb on loopback with an
// espeak-ng WAV file as its microphone and records what it hears (its
// sndfile module); the recording is the agent's reply, as pocketsphinx
// hears it. The trunk admits the machine by address, as make dev's does.
func TestBaresipCallsAvb(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("baresip")
	if err != nil {
		t.Fatal("baresip is missing: run  apt-get install -y baresip  (.ci/run does)")
	}
	p, _, admin, _ := phonePlatform(t, nil)
	wantOK(t, p.call("/avb.v1.SipTrunkService/CreateSipTrunk", `{"sipTrunk":{"name":"this machine","allowedSources":["127.0.0.1/32"]}}`, admin...))
	dir := t.TempDir()
	// The microphone: the request, then silence for the reply (8 kHz mono).
	in := filepath.Join(dir, "ask.wav")
	pcm := audio.NewResampler(16000, 8000).Process(spokenPCM(t, ask, 6000), nil)
	f, err := os.Create(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := wav.Write(f, pcm, 8000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	records := filepath.Join(dir, "heard")
	if err := os.Mkdir(records, 0o755); err != nil {
		t.Fatal(err)
	}
	config := strings.Join([]string{
		"module_path /usr/lib/baresip/modules",
		fmt.Sprintf("sip_listen 127.0.0.1:%d", testenv.FreePort(t)),
		"net_interface 127.0.0.1",
		"audio_source aufile," + in,
		"audio_player aubridge,nowhere",
		"audio_alert aubridge,nowhere",
		"module g711.so",
		"module aufile.so",
		"module aubridge.so",
		"module sndfile.so",
		"module_app account.so",
		"module_app menu.so",
		"snd_path " + records,
		"",
	}, "\n")
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts"), []byte("<sip:tester@127.0.0.1>;regint=0;audio_codecs=PCMU\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := "sip:+15550100@" + p.app.SIPAddr().String()
	cmd := exec.Command(bin, "-f", dir, "-e", "/dial "+target, "-t", "14")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("baresip: %v\n%s", err, out)
	}
	files, _ := filepath.Glob(filepath.Join(records, "*dec*.wav"))
	if len(files) == 0 {
		all, _ := filepath.Glob(filepath.Join(records, "*"))
		t.Fatalf("baresip recorded nothing it heard: %v\n%s", all, out)
	}
	rf, err := os.Open(files[0])
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	heard, rate, err := wav.Read(rf)
	if err != nil {
		t.Fatal(err)
	}
	heard16 := audio.NewResampler(rate, 16000).Process(heard, nil)
	if got := recognized16(t, heard16, "sure i booked the meeting for tomorrow at ten", "hello", "goodbye"); !strings.Contains(got, "booked the meeting") {
		t.Fatalf("baresip heard %q (%d samples at %d Hz)\n%s", got, len(heard), rate, out)
	}
}
