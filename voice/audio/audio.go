// Package audio converts between the wire formats a call may use and the
// engine's internal format: 16-bit signed little-endian PCM mono at 16 kHz.
// Supported on the wire: PCM16 at 8, 16, 24 and 48 kHz, and G.711 mu-law and
// A-law at 8 kHz.
package audio

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Encoding is how samples are stored on the wire.
type Encoding int

// Encodings.
const (
	PCM16 Encoding = iota + 1 // signed 16-bit little-endian
	MuLaw                     // G.711 mu-law, 8 bits a sample
	ALaw                      // G.711 A-law, 8 bits a sample
)

// Format is a wire audio format (always mono).
type Format struct {
	Encoding   Encoding
	SampleRate int
}

// Internal is the engine's format: what STT consumes and the mixer works in.
var Internal = Format{Encoding: PCM16, SampleRate: 16000}

// ErrFormat reports an unsupported format.
var ErrFormat = errors.New("unsupported audio format")

// Validate checks the format is one the engine supports.
func (f Format) Validate() error {
	switch f.Encoding {
	case PCM16:
		switch f.SampleRate {
		case 8000, 16000, 24000, 48000:
			return nil
		}
	case MuLaw, ALaw:
		if f.SampleRate == 8000 {
			return nil
		}
	}
	return fmt.Errorf("%w: encoding %d at %d Hz (pcm16 at 8/16/24/48 kHz, mu-law or a-law at 8 kHz)", ErrFormat, f.Encoding, f.SampleRate)
}

// BytesPerSample is the size of one sample on the wire.
func (f Format) BytesPerSample() int {
	if f.Encoding == PCM16 {
		return 2
	}
	return 1
}

// BytesFor is how many bytes ms milliseconds take.
func (f Format) BytesFor(ms int) int { return f.SampleRate * ms / 1000 * f.BytesPerSample() }

// Duration in milliseconds of n bytes.
func (f Format) DurationMS(n int) float64 {
	return float64(n) / float64(f.BytesPerSample()) / float64(f.SampleRate) * 1000
}

// ErrOddLength: PCM16 data must have an even number of bytes.
var ErrOddLength = errors.New("pcm16 audio must have an even number of bytes")

// Decode turns wire bytes into samples at the format's own rate. dst is
// reused when large enough.
func Decode(f Format, b []byte, dst []int16) ([]int16, error) {
	switch f.Encoding {
	case PCM16:
		if len(b)%2 != 0 {
			return nil, ErrOddLength
		}
		dst = grow(dst, len(b)/2)
		for i := range dst {
			dst[i] = int16(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case MuLaw:
		dst = grow(dst, len(b))
		for i, c := range b {
			dst[i] = muLawDecode[c]
		}
	case ALaw:
		dst = grow(dst, len(b))
		for i, c := range b {
			dst[i] = aLawDecode[c]
		}
	default:
		return nil, ErrFormat
	}
	return dst, nil
}

// Encode turns samples at the format's rate into wire bytes, appended to dst.
func Encode(f Format, s []int16, dst []byte) ([]byte, error) {
	switch f.Encoding {
	case PCM16:
		for _, v := range s {
			dst = binary.LittleEndian.AppendUint16(dst, uint16(v))
		}
	case MuLaw:
		for _, v := range s {
			dst = append(dst, muLawEncode(v))
		}
	case ALaw:
		for _, v := range s {
			dst = append(dst, aLawEncode(v))
		}
	default:
		return nil, ErrFormat
	}
	return dst, nil
}

func grow(s []int16, n int) []int16 {
	if cap(s) < n {
		return make([]int16, n)
	}
	return s[:n]
}
