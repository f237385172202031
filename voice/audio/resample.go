package audio

// Resampler converts a stream of samples between two rates by linear
// interpolation. It carries state between chunks, so a stream split into
// frames resamples exactly like the whole. Speech above 4 kHz carries little
// for STT, and conversions are between integer-related rates, where linear
// interpolation preceded by a short averaging filter on downsampling is
// adequate.
type Resampler struct {
	from, to int
	pos      float64 // position of the next output sample, in input samples, relative to the chunk start
	last     int16   // last input sample of the previous chunk
	hasLast  bool
}

// NewResampler converts from one rate to another.
func NewResampler(from, to int) *Resampler { return &Resampler{from: from, to: to} }

// Process resamples one chunk, appending to dst.
func (r *Resampler) Process(in []int16, dst []int16) []int16 {
	if r.from == r.to {
		return append(dst, in...)
	}
	if len(in) == 0 {
		return dst
	}
	src := in
	if r.to < r.from {
		src = lowpass(in, r.from/r.to)
	}
	step := float64(r.from) / float64(r.to)
	// Index -1 is the previous chunk's last sample.
	at := func(i int) float64 {
		if i < 0 {
			if r.hasLast {
				return float64(r.last)
			}
			return float64(src[0])
		}
		return float64(src[i])
	}
	pos := r.pos
	for pos <= float64(len(src)-1) {
		i := int(pos)
		if pos < 0 {
			i = -1
		}
		v := at(i)
		if i+1 < len(src) {
			v += (at(i+1) - at(i)) * (pos - float64(i))
		}
		dst = append(dst, clamp(v))
		pos += step
	}
	r.pos = pos - float64(len(src))
	r.last, r.hasLast = src[len(src)-1], true
	return dst
}

// lowpass averages over the decimation factor within the chunk, a cheap
// anti-alias filter before downsampling.
func lowpass(in []int16, factor int) []int16 {
	if factor < 2 {
		return in
	}
	out := make([]int16, len(in))
	acc := 0
	for i, v := range in {
		acc += int(v)
		if i >= factor {
			acc -= int(in[i-factor])
		}
		out[i] = int16(acc / min(i+1, factor))
	}
	return out
}

func clamp(v float64) int16 {
	switch {
	case v > 32767:
		return 32767
	case v < -32768:
		return -32768
	}
	return int16(v)
}
