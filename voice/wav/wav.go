// Package wav reads and writes 16-bit PCM mono WAV files, for tools and tests.
package wav

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Read returns the samples and sample rate of a 16-bit PCM WAV file. Stereo
// files are mixed down to mono.
func Read(r io.Reader) ([]int16, int, error) {
	var hdr [12]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil || string(hdr[0:4]) != "RIFF" || string(hdr[8:12]) != "WAVE" {
		return nil, 0, errors.New("not a RIFF/WAVE file")
	}
	var rate, channels, bits int
	for {
		var ch [8]byte
		if _, err := io.ReadFull(r, ch[:]); err != nil {
			return nil, 0, errors.New("no data chunk")
		}
		size := int64(binary.LittleEndian.Uint32(ch[4:]))
		switch string(ch[0:4]) {
		case "fmt ":
			if size > 64 {
				return nil, 0, errors.New("bad fmt chunk")
			}
			b := make([]byte, size)
			if _, err := io.ReadFull(r, b); err != nil || size < 16 {
				return nil, 0, errors.New("bad fmt chunk")
			}
			if binary.LittleEndian.Uint16(b[0:]) != 1 {
				return nil, 0, errors.New("only PCM WAV files are supported")
			}
			channels, rate, bits = int(binary.LittleEndian.Uint16(b[2:])), int(binary.LittleEndian.Uint32(b[4:])), int(binary.LittleEndian.Uint16(b[14:]))
		case "data":
			if bits != 16 || channels < 1 {
				return nil, 0, fmt.Errorf("need 16-bit PCM, got %d-bit with %d channels", bits, channels)
			}
			b, err := io.ReadAll(io.LimitReader(r, size))
			if err != nil {
				return nil, 0, err
			}
			n := len(b) / 2 / channels
			out := make([]int16, n)
			for i := range out {
				sum := 0
				for c := range channels {
					sum += int(int16(binary.LittleEndian.Uint16(b[2*(i*channels+c):])))
				}
				out[i] = int16(sum / channels)
			}
			return out, rate, nil
		default:
			if _, err := io.CopyN(io.Discard, r, size+size%2); err != nil {
				return nil, 0, errors.New("truncated file")
			}
		}
	}
}

// Write writes samples as a 16-bit PCM mono WAV file.
func Write(w io.Writer, samples []int16, rate int) error {
	data := len(samples) * 2
	b := make([]byte, 0, 44+data)
	b = append(b, "RIFF"...)
	b = binary.LittleEndian.AppendUint32(b, uint32(36+data))
	b = append(b, "WAVEfmt "...)
	b = binary.LittleEndian.AppendUint32(b, 16)
	b = binary.LittleEndian.AppendUint16(b, 1)
	b = binary.LittleEndian.AppendUint16(b, 1)
	b = binary.LittleEndian.AppendUint32(b, uint32(rate))
	b = binary.LittleEndian.AppendUint32(b, uint32(rate*2))
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, 16)
	b = append(b, "data"...)
	b = binary.LittleEndian.AppendUint32(b, uint32(data))
	for _, s := range samples {
		b = binary.LittleEndian.AppendUint16(b, uint16(s))
	}
	_, err := w.Write(b)
	return err
}
