// Package vad detects speech in 16 kHz audio, frame by frame, with the
// settings callers of realtime voice APIs know: a threshold, prefix padding
// kept from before speech starts, and the silence that ends a turn.
package vad

import "math"

// Config tunes detection. Zero values take the defaults.
type Config struct {
	// Threshold in [0, 1]: higher needs louder speech (default 0.5).
	Threshold float64
	// PrefixPaddingMS of audio before speech starts is kept (default 300).
	PrefixPaddingMS int
	// SilenceDurationMS of silence ends speech (default 500).
	SilenceDurationMS int
	// MinSpeechMS of speech is needed before speech counts as started
	// (default 60), so clicks do not start a turn.
	MinSpeechMS int
}

func (c Config) withDefaults() Config {
	if c.Threshold <= 0 {
		c.Threshold = 0.5
	}
	if c.PrefixPaddingMS <= 0 {
		c.PrefixPaddingMS = 300
	}
	if c.SilenceDurationMS <= 0 {
		c.SilenceDurationMS = 500
	}
	if c.MinSpeechMS <= 0 {
		c.MinSpeechMS = 60
	}
	return c
}

// Event is what a frame changed.
type Event int

// Events.
const (
	None Event = iota
	SpeechStarted
	SpeechStopped
)

// FrameMS is the frame length the detector expects (20 ms, 320 samples at 16 kHz).
const FrameMS = 20

// Detector is a speech detector for one stream.
type Detector struct {
	cfg       Config
	levelDB   float64 // frames above this RMS level (dBFS) are voiced
	speaking  bool
	voicedMS  int
	silentMS  int
	prefix    [][]int16 // recent frames, for the prefix padding
	maxPrefix int
}

// New returns a detector.
func New(cfg Config) *Detector {
	cfg = cfg.withDefaults()
	return &Detector{
		cfg:       cfg,
		levelDB:   -60 + 50*cfg.Threshold, // 0.5 -> -35 dBFS
		maxPrefix: cfg.PrefixPaddingMS / FrameMS,
	}
}

// Speaking reports whether speech is in progress.
func (d *Detector) Speaking() bool { return d.speaking }

// SilenceMS is the silence since the last voiced frame while speech is in
// progress: 0 right after a voiced frame, growing towards the silence
// duration that ends the turn.
func (d *Detector) SilenceMS() int { return d.silentMS }

// SilenceDurationMS is the silence that ends speech, defaults applied.
func (d *Detector) SilenceDurationMS() int { return d.cfg.SilenceDurationMS }

// Level returns a frame's RMS level in dBFS.
func Level(frame []int16) float64 {
	if len(frame) == 0 {
		return math.Inf(-1)
	}
	var sum float64
	for _, s := range frame {
		sum += float64(s) * float64(s)
	}
	return 20 * math.Log10(math.Sqrt(sum/float64(len(frame)))/32768+1e-12)
}

// Process takes the next frame and says whether speech started or stopped
// with it. When speech starts, Prefix holds the frames that led up to it
// (the padding and the voiced frames), ready to feed to recognition.
func (d *Detector) Process(frame []int16) Event {
	voiced := Level(frame) > d.levelDB
	if !d.speaking {
		d.prefix = append(d.prefix, frame)
		if len(d.prefix) > d.maxPrefix+d.cfg.MinSpeechMS/FrameMS {
			d.prefix = d.prefix[1:]
		}
		if voiced {
			d.voicedMS += FrameMS
		} else {
			d.voicedMS = 0
		}
		if d.voicedMS >= d.cfg.MinSpeechMS {
			d.speaking, d.silentMS = true, 0
			return SpeechStarted
		}
		return None
	}
	if voiced {
		d.silentMS = 0
		return None
	}
	d.silentMS += FrameMS
	if d.silentMS >= d.cfg.SilenceDurationMS {
		d.speaking, d.voicedMS = false, 0
		d.prefix = d.prefix[:0]
		return SpeechStopped
	}
	return None
}

// Prefix returns (and forgets) the frames buffered before speech started.
func (d *Detector) Prefix() [][]int16 {
	p := d.prefix
	d.prefix = nil
	return p
}

// Reset forgets all state (manual commit or clear).
func (d *Detector) Reset() {
	d.speaking, d.voicedMS, d.silentMS, d.prefix = false, 0, 0, nil
}
