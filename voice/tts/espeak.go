package tts

/*
#cgo pkg-config: espeak-ng
#include <stdlib.h>
#include <espeak-ng/speak_lib.h>

extern int avbSynthCallback(short *wav, int numsamples, espeak_EVENT *events);

static int avb_cb(short *wav, int n, espeak_EVENT *ev) { return avbSynthCallback(wav, n, ev); }

static int avb_init(void) {
	int rate = espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 60, NULL, 0);
	if (rate > 0) espeak_SetSynthCallback(avb_cb);
	return rate;
}

static int avb_synth(const char *text) {
	return espeak_Synth(text, 0, 0, POS_CHARACTER, 0, espeakCHARS_UTF8, NULL, NULL);
}
*/
import "C"

import (
	"context"
	"fmt"
	"sync"
	"unsafe"
)

// Espeak is espeak-ng, in process. It synthesizes far faster than real time
// (about 150x here) and streams each buffer as it is produced. espeak-ng
// keeps global state, so one synthesis runs at a time per process.
type Espeak struct {
	rate int
}

var espeak struct {
	sync.Mutex
	once sync.Once
	rate int
	err  error
	// The running synthesis: its sink, context and first error.
	emit func([]int16) error
	ctx  context.Context
	fail error
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
	if espeak.fail != nil {
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
	espeak.Lock()
	defer espeak.Unlock()
	voice := req.Voice
	if voice == "" {
		voice = "en-us"
	}
	cv := C.CString(voice)
	defer C.free(unsafe.Pointer(cv))
	if C.espeak_SetVoiceByName(cv) != C.EE_OK {
		return fmt.Errorf("tts: espeak-ng has no voice %q", voice)
	}
	ct := C.CString(req.Text)
	defer C.free(unsafe.Pointer(ct))
	espeak.emit, espeak.ctx, espeak.fail = emit, ctx, nil
	defer func() { espeak.emit, espeak.ctx = nil, nil }()
	if rc := C.avb_synth(ct); rc != C.EE_OK && espeak.fail == nil {
		return fmt.Errorf("tts: espeak-ng synthesis failed (%d)", int(rc))
	}
	return espeak.fail
}
