package tts

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// The synthesis worker protocol: espeak-ng keeps global state, so one
// process synthesizes one sentence at a time. A Pool runs several worker
// processes (`avb tts-worker`) and talks to each over its stdin and stdout
// in frames: one type byte, a little-endian uint32 payload length, the
// payload.
//
//	parent -> worker: 'S' synthesize: uint32 id, uint16 voice length, voice, text
//	                  'C' cancel: uint32 id of the synthesis to stop
//	worker -> parent: 'R' ready: uint32 sample rate (once, first)
//	                  'A' audio: PCM16 little-endian samples, as produced
//	                  'D' done: "" or the error's text
//
// A cancel stops the synthesis it names at espeak-ng's next buffer (60 ms
// of audio), or before it starts; a cancel for one already done is ignored.
// Every synthesis ends with exactly one 'D'.
const (
	frameSynth  = 'S'
	frameCancel = 'C'
	frameReady  = 'R'
	frameAudio  = 'A'
	frameDone   = 'D'
)

// maxFrame bounds a frame's payload (a sentence or an audio buffer).
const maxFrame = 1 << 20

// errCanceledByParent is the done text of a cancelled synthesis.
const errCanceledByParent = "canceled"

func writeFrame(w io.Writer, typ byte, payload []byte) error {
	var h [5]byte
	h[0] = typ
	binary.LittleEndian.PutUint32(h[1:], uint32(len(payload)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

func readFrame(r *bufio.Reader, buf []byte) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.LittleEndian.Uint32(h[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("tts worker: frame of %d bytes", n)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, err
	}
	return h[0], buf, nil
}

// synthPayload encodes a synthesis request.
func synthPayload(id uint32, req Request) []byte {
	b := make([]byte, 6, 6+len(req.Voice)+len(req.Text))
	binary.LittleEndian.PutUint32(b, id)
	binary.LittleEndian.PutUint16(b[4:], uint16(len(req.Voice)))
	b = append(b, req.Voice...)
	return append(b, req.Text...)
}

// parseSynth decodes a synthesis request.
func parseSynth(b []byte) (uint32, Request, error) {
	if len(b) < 6 {
		return 0, Request{}, errors.New("tts worker: short request")
	}
	id, n := binary.LittleEndian.Uint32(b), int(binary.LittleEndian.Uint16(b[4:]))
	if len(b) < 6+n {
		return 0, Request{}, errors.New("tts worker: short request")
	}
	return id, Request{Voice: string(b[6 : 6+n]), Text: string(b[6+n:])}, nil
}

// idPayload encodes a cancel.
func idPayload(id uint32) []byte { return binary.LittleEndian.AppendUint32(nil, id) }

// job is a synthesis request the worker has read.
type job struct {
	id  uint32
	req Request
}

// canceller stops the worker's running synthesis by id, or the next one
// before it starts.
type canceller struct {
	sync.Mutex
	cur     uint32
	fn      context.CancelFunc
	pending uint32 // a cancel read before its synthesis started (0: none)
}

func (c *canceller) cancel(id uint32) {
	c.Lock()
	defer c.Unlock()
	switch {
	case c.fn != nil && id == c.cur:
		c.fn()
	case id > c.cur:
		c.pending = id
	}
}

func (c *canceller) cancelCurrent() {
	c.Lock()
	defer c.Unlock()
	if c.fn != nil {
		c.fn()
	}
}

func (c *canceller) start(id uint32, fn context.CancelFunc) {
	c.Lock()
	defer c.Unlock()
	c.cur, c.fn = id, fn
	if c.pending == id {
		fn()
	}
}

func (c *canceller) stop() {
	c.Lock()
	defer c.Unlock()
	c.fn = nil
}

// ServeWorker is the `avb tts-worker` process: it synthesizes the requests
// read from r with s, one at a time, and writes the frames to w, until r
// ends.
func ServeWorker(r io.Reader, w io.Writer, s Synthesizer) error {
	out := bufio.NewWriterSize(w, 64<<10)
	var mu sync.Mutex // frames from the synthesis and the reader interleave whole
	send := func(typ byte, payload []byte, flush bool) error {
		mu.Lock()
		defer mu.Unlock()
		if err := writeFrame(out, typ, payload); err != nil {
			return err
		}
		if flush {
			return out.Flush()
		}
		return nil
	}
	var rate [4]byte
	binary.LittleEndian.PutUint32(rate[:], uint32(s.SampleRate()))
	if err := send(frameReady, rate[:], true); err != nil {
		return err
	}
	in := bufio.NewReader(r)
	jobs := make(chan job)
	var cancels canceller
	readErr := make(chan error, 1)
	go func() { // reads requests, and cancels while a synthesis runs
		defer close(jobs)
		var buf []byte
		for {
			typ, payload, err := readFrame(in, buf)
			if err != nil {
				readErr <- err
				cancels.cancelCurrent() // the parent is gone
				return
			}
			buf = payload
			switch typ {
			case frameSynth:
				id, req, err := parseSynth(payload)
				if err != nil {
					readErr <- err
					return
				}
				jobs <- job{id, req}
			case frameCancel:
				if len(payload) == 4 {
					cancels.cancel(binary.LittleEndian.Uint32(payload))
				}
			}
		}
	}()
	pcm := make([]byte, 0, 8192)
	for j := range jobs {
		ctx, stop := context.WithCancel(context.Background())
		cancels.start(j.id, stop)
		first := true
		err := s.Synthesize(ctx, j.req, func(samples []int16) error {
			pcm = pcm[:0]
			for _, v := range samples {
				pcm = binary.LittleEndian.AppendUint16(pcm, uint16(v))
			}
			// The first buffer leaves at once (time to first audio); the
			// rest, produced far faster than real time, go out as the
			// output buffer fills (about 1.5 s of audio) or the sentence
			// ends, which saves a process wake-up per 60 ms buffer.
			flush := first
			first = false
			return send(frameAudio, pcm, flush)
		})
		cancels.stop()
		stop()
		done := ""
		switch {
		case errors.Is(err, context.Canceled):
			done = errCanceledByParent
		case err != nil:
			done = err.Error()
		}
		if err := send(frameDone, []byte(done), true); err != nil {
			return err
		}
	}
	if err := <-readErr; !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}
