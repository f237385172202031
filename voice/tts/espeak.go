package tts

/*
#cgo pkg-config: espeak-ng
#include <stdlib.h>
#include <espeak-ng/speak_lib.h>

#include <string.h>

extern int avbSynthCallback(short *wav, int numsamples, espeak_EVENT *events);

// Streaming: each buffer goes to Go as espeak-ng produces it.
static int avb_stream_cb(short *wav, int n, espeak_EVENT *ev) { return avbSynthCallback(wav, n, ev); }

// Buffered: the buffers collect in C and Go takes the sentence at once,
// so a synthesis never waits on the Go scheduler (a C-to-Go callback needs
// a free P) while it holds espeak-ng. avb_stop, set from Go to the number
// of the synthesis to stop, stops it at the next buffer (a stop that comes
// late, naming a synthesis already done, stops nothing).
static short *avb_buf;
static int avb_len, avb_cap, avb_failed;
static unsigned avb_gen, avb_stop;

static int avb_buffer_cb(short *wav, int n, espeak_EVENT *ev) {
	if (__atomic_load_n(&avb_stop, __ATOMIC_RELAXED) == avb_gen) return 1;
	if (wav == NULL || n <= 0) return 0;
	if (avb_len + n > avb_cap) {
		int c = avb_cap ? avb_cap : 32768;
		while (c < avb_len + n) c *= 2;
		short *b = realloc(avb_buf, (size_t)c * sizeof(short));
		if (b == NULL) { avb_failed = 1; return 1; }
		avb_buf = b;
		avb_cap = c;
	}
	memcpy(avb_buf + avb_len, wav, (size_t)n * sizeof(short));
	avb_len += n;
	return 0;
}

static int avb_init(void) {
	return espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 60, NULL, 0);
}

static int avb_synth(const char *text, int streaming, unsigned gen) {
	espeak_SetSynthCallback(streaming ? avb_stream_cb : avb_buffer_cb);
	avb_len = 0;
	avb_failed = 0;
	avb_gen = gen;
	return espeak_Synth(text, 0, 0, POS_CHARACTER, 0, espeakCHARS_UTF8, NULL, NULL);
}

static void avb_synth_stop(unsigned gen) { __atomic_store_n(&avb_stop, gen, __ATOMIC_RELAXED); }
static short *avb_samples(void) { return avb_buf; }
static int avb_samples_len(void) { return avb_len; }
static int avb_buffer_failed(void) { return avb_failed; }
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"unsafe"
)

// Espeak is espeak-ng, in process. It synthesizes far faster than real time
// (about 1,000x here: a few milliseconds a sentence). espeak-ng keeps
// global state, so one synthesis runs at a time per process (a Pool of
// worker processes runs several).
//
// By default a sentence is synthesized whole in C and then emitted in
// buffers: a loaded server's Go scheduler made each C-to-Go callback wait,
// and every call's synthesis queued behind the one holding espeak-ng
// (60 calls: ~55 ms p50 waiting, against ~1 ms of work). Streaming passes
// each buffer to Go as it is produced: for a worker process, which does
// nothing else.
type Espeak struct {
	rate      int
	Streaming bool
}

// bufferSamples is how many samples a buffered synthesis emits at a time
// (60 ms at 22,050 Hz, espeak-ng's own buffer).
const bufferSamples = 1323

var espeak struct {
	sync.Mutex
	once sync.Once
	rate int
	err  error
	// The running synthesis: its sink, context and first error.
	emit func([]int16) error
	ctx  context.Context
	fail error
	// gen numbers the syntheses, from 1 (a stop names one).
	gen C.uint
}

// NewEspeak initializes espeak-ng once per process.
func NewEspeak() (*Espeak, error) {
	espeak.once.Do(func() {
		rate := int(C.avb_init())
		if rate <= 0 {
			espeak.err = fmt.Errorf("tts: espeak-ng failed to initialize (is espeak-ng-data installed?)")
			return
		}
		espeak.rate = rate
	})
	if espeak.err != nil {
		return nil, espeak.err
	}
	return &Espeak{rate: espeak.rate}, nil
}

// SampleRate implements Synthesizer (22,050 Hz for espeak-ng voices).
func (e *Espeak) SampleRate() int { return e.rate }

//export avbSynthCallback
func avbSynthCallback(wav *C.short, n C.int, _ *C.espeak_EVENT) C.int {
	if espeak.fail != nil || espeak.ctx == nil {
		return 1
	}
	if err := espeak.ctx.Err(); err != nil {
		espeak.fail = err
		return 1 // abort synthesis
	}
	if wav == nil || n <= 0 {
		return 0
	}
	samples := unsafe.Slice((*int16)(unsafe.Pointer(wav)), int(n))
	chunk := make([]int16, len(samples)) // espeak reuses its buffer
	copy(chunk, samples)
	if err := espeak.emit(chunk); err != nil {
		espeak.fail = err
		return 1
	}
	return 0
}

// Synthesize implements Synthesizer.
func (e *Espeak) Synthesize(ctx context.Context, req Request, emit func([]int16) error) error {
	if req.Text == "" {
		return ErrEmptyText
	}
	voice := req.Voice
	if voice == "" {
		voice = "en-us"
	}
	cv := C.CString(voice)
	defer C.free(unsafe.Pointer(cv))
	ct := C.CString(req.Text)
	defer C.free(unsafe.Pointer(ct))
	if e.Streaming {
		return e.stream(ctx, cv, ct, voice, emit)
	}
	samples, err := e.whole(ctx, cv, ct, voice)
	if err != nil {
		return err
	}
	for len(samples) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(bufferSamples, len(samples))
		if err := emit(samples[:n:n]); err != nil {
			return err
		}
		samples = samples[n:]
	}
	return nil
}

// whole synthesizes a sentence in C and returns its samples.
func (e *Espeak) whole(ctx context.Context, cv, ct *C.char, voice string) ([]int16, error) {
	espeak.Lock()
	defer espeak.Unlock()
	if C.espeak_SetVoiceByName(cv) != C.EE_OK {
		return nil, fmt.Errorf("tts: espeak-ng has no voice %q", voice)
	}
	espeak.gen++
	if espeak.gen == 0 {
		espeak.gen = 1
	}
	gen := espeak.gen
	stop := context.AfterFunc(ctx, func() { C.avb_synth_stop(gen) })
	rc := C.avb_synth(ct, 0, gen)
	stop()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if C.avb_buffer_failed() != 0 {
		return nil, errors.New("tts: out of memory for espeak-ng's audio")
	}
	if rc != C.EE_OK {
		return nil, fmt.Errorf("tts: espeak-ng synthesis failed (%d)", int(rc))
	}
	n := int(C.avb_samples_len())
	out := make([]int16, n)
	if n > 0 {
		copy(out, unsafe.Slice((*int16)(unsafe.Pointer(C.avb_samples())), n))
	}
	return out, nil
}

// stream synthesizes a sentence, emitting each buffer as espeak-ng makes it.
func (e *Espeak) stream(ctx context.Context, cv, ct *C.char, voice string, emit func([]int16) error) error {
	espeak.Lock()
	defer espeak.Unlock()
	if C.espeak_SetVoiceByName(cv) != C.EE_OK {
		return fmt.Errorf("tts: espeak-ng has no voice %q", voice)
	}
	espeak.emit, espeak.ctx, espeak.fail = emit, ctx, nil
	defer func() { espeak.emit, espeak.ctx = nil, nil }()
	if rc := C.avb_synth(ct, 1, 0); rc != C.EE_OK && espeak.fail == nil {
		return fmt.Errorf("tts: espeak-ng synthesis failed (%d)", int(rc))
	}
	return espeak.fail
}
