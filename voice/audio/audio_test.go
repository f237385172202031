package audio_test

import (
	"bytes"
	"math"
	"testing"

	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/voice/audio"
)

func TestG711CodesRoundTrip(t *testing.T) {
	t.Parallel()
	for _, enc := range []audio.Encoding{audio.MuLaw, audio.ALaw} {
		f := audio.Format{Encoding: enc, SampleRate: 8000}
		for c := range 256 {
			if enc == audio.MuLaw && c == 0x7f { // negative zero: encodes back as 0xff
				continue
			}
			s, err := audio.Decode(f, []byte{byte(c)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := audio.Encode(f, s, nil)
			if b[0] != byte(c) {
				t.Fatalf("encoding %d: code %#x decodes to %d, which encodes to %#x", enc, c, s[0], b[0])
			}
		}
	}
}

// Companding keeps every sample within its segment's quantization step.
func TestPropertyG711Error(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		v := rapid.Int16().Draw(t, "sample")
		for _, enc := range []audio.Encoding{audio.MuLaw, audio.ALaw} {
			f := audio.Format{Encoding: enc, SampleRate: 8000}
			b, _ := audio.Encode(f, []int16{v}, nil)
			s, _ := audio.Decode(f, b, nil)
			err := math.Abs(float64(s[0]) - float64(v))
			if limit := math.Max(64, math.Abs(float64(v))/16); err > limit {
				t.Fatalf("encoding %d: %d came back as %d (error %v > %v)", enc, v, s[0], err, limit)
			}
		}
	})
}

func TestPCM16RoundTripAndValidation(t *testing.T) {
	t.Parallel()
	f := audio.Format{Encoding: audio.PCM16, SampleRate: 24000}
	in := []int16{0, 1, -1, 32767, -32768, 1234}
	b, _ := audio.Encode(f, in, nil)
	out, err := audio.Decode(f, b, nil)
	if err != nil || len(out) != len(in) {
		t.Fatal(err)
	}
	for i := range in {
		if in[i] != out[i] {
			t.Fatalf("sample %d: %d != %d", i, in[i], out[i])
		}
	}
	if _, err := audio.Decode(f, []byte{1, 2, 3}, nil); err != audio.ErrOddLength {
		t.Fatalf("odd length: %v", err)
	}
	for _, bad := range []audio.Format{{audio.PCM16, 44100}, {audio.MuLaw, 16000}, {0, 8000}} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if f.BytesFor(20) != 960 || audio.Internal.BytesFor(20) != 640 {
		t.Fatal("frame size arithmetic")
	}
}

func sine(rate int, hz float64, n int) []int16 {
	s := make([]int16, n)
	for i := range s {
		s[i] = int16(8000 * math.Sin(2*math.Pi*hz*float64(i)/float64(rate)))
	}
	return s
}

func crossings(s []int16) int {
	n := 0
	for i := 1; i < len(s); i++ {
		if (s[i-1] < 0) != (s[i] < 0) {
			n++
		}
	}
	return n
}

// Resampling a stream in random chunks equals resampling it whole, keeps the
// duration, and keeps the pitch.
func TestPropertyResamplerChunking(t *testing.T) {
	t.Parallel()
	rates := []int{8000, 16000, 24000, 48000}
	rapid.Check(t, func(t *rapid.T) {
		from, to := rapid.SampledFrom(rates).Draw(t, "from"), rapid.SampledFrom(rates).Draw(t, "to")
		in := sine(from, 440, from/2) // half a second of A4
		whole := audio.NewResampler(from, to).Process(in, nil)
		r := audio.NewResampler(from, to)
		var chunked []int16
		for rest := in; len(rest) > 0; {
			n := min(len(rest), rapid.IntRange(1, 2000).Draw(t, "chunk"))
			chunked = r.Process(rest[:n], chunked)
			rest = rest[n:]
		}
		wantLen := len(in) * to / from
		slack := max(2, to/from+1) // upsampling holds back the samples after the last input
		if d := len(whole) - wantLen; d < -slack || d > slack {
			t.Fatalf("%d -> %d Hz: %d samples, want about %d", from, to, len(whole), wantLen)
		}
		if d := len(chunked) - len(whole); d < -1 || d > 1 {
			t.Fatalf("chunked gives %d samples, whole %d", len(chunked), len(whole))
		}
		if c := crossings(whole); c < 430 || c > 450 {
			t.Fatalf("pitch changed: %d zero crossings in 0.5 s, want about 440", c)
		}
	})
}

func FuzzDecode(f *testing.F) {
	f.Add(byte(0), []byte{1, 2, 3, 4})
	f.Add(byte(1), []byte{0xff, 0x7f})
	f.Add(byte(2), []byte{})
	f.Fuzz(func(t *testing.T, which byte, data []byte) {
		formats := []audio.Format{{audio.PCM16, 16000}, {audio.MuLaw, 8000}, {audio.ALaw, 8000}, {audio.Encoding(9), 8000}}
		fm := formats[int(which)%len(formats)]
		s, err := audio.Decode(fm, data, nil)
		if err != nil {
			return
		}
		b, err := audio.Encode(fm, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		if fm.Encoding == audio.PCM16 && !bytes.Equal(b, data) {
			t.Fatal("pcm16 does not round-trip")
		}
		if len(b) != len(data) {
			t.Fatalf("re-encoded %d bytes from %d", len(b), len(data))
		}
		_ = audio.NewResampler(fm.SampleRate, 16000).Process(s, nil)
	})
}
