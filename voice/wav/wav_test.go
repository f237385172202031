package wav_test

import (
	"bytes"
	"slices"
	"testing"

	"github.com/agentvoicebox/avb/voice/wav"
)

func TestRoundTrip(t *testing.T) {
	in := []int16{0, 1, -1, 32767, -32768}
	var b bytes.Buffer
	if err := wav.Write(&b, in, 22050); err != nil {
		t.Fatal(err)
	}
	out, rate, err := wav.Read(&b)
	if err != nil || rate != 22050 || !slices.Equal(in, out) {
		t.Fatalf("%v %d %v", out, rate, err)
	}
}

func FuzzRead(f *testing.F) {
	var b bytes.Buffer
	_ = wav.Write(&b, []int16{1, 2, 3}, 8000)
	f.Add(b.Bytes())
	f.Add([]byte("RIFF\x00\x00\x00\x00WAVEdata\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _, _ = wav.Read(bytes.NewReader(data))
	})
}
