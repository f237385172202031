package tts

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Pool synthesizes in worker processes, one sentence at a time each, so
// espeak-ng (which runs once per process) uses every core. A synthesis
// streams each buffer back as the worker produces it, and a cancelled one
// stops within a buffer. A worker that dies or stops answering is replaced.
type Pool struct {
	// Command starts one worker (a fresh *exec.Cmd each call), e.g. the avb
	// binary with the argument tts-worker.
	command func() *exec.Cmd
	rate    int
	idle    chan *worker
	size    int

	mu     sync.Mutex
	closed bool
	all    map[*worker]bool
	nextID uint32
	// exitedCPU is the CPU time of workers that have exited.
	exitedCPU time.Duration
}

// worker is one worker process.
type worker struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	frames chan frame // what the worker writes, decoded; closed when it exits
	exited chan struct{}
	dead   chan struct{} // closed by kill
	killed sync.Once
}

// gone reports whether the worker exited or was killed.
func (w *worker) gone() bool {
	select {
	case <-w.exited:
		return true
	case <-w.dead:
		return true
	default:
		return false
	}
}

type frame struct {
	typ     byte
	payload []byte
}

// Bounds of a worker's answers.
const (
	// workerStart bounds a new worker's ready frame.
	workerStart = 10 * time.Second
	// cancelWait bounds the done frame after a cancel; a worker that does
	// not answer within it is killed and replaced.
	cancelWait = time.Second
	// synthesisTimeout bounds a synthesis whose context has no deadline.
	synthesisTimeout = 30 * time.Second
)

// NewPool starts size workers with command and waits until they are ready.
func NewPool(size int, command func() *exec.Cmd) (*Pool, error) {
	if size < 1 {
		return nil, errors.New("tts: a worker pool needs at least one worker")
	}
	p := &Pool{command: command, idle: make(chan *worker, size), size: size, all: map[*worker]bool{}}
	for range size {
		w, rate, err := p.start()
		if err != nil {
			p.Close()
			return nil, err
		}
		p.rate = rate
		p.idle <- w
	}
	return p, nil
}

// start runs one worker and reads its ready frame.
func (p *Pool) start() (*worker, int, error) {
	cmd := p.command()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, 0, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, 0, err
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, 0, fmt.Errorf("tts: start worker: %w", err)
	}
	w := &worker{cmd: cmd, stdin: stdin, frames: make(chan frame, 64), exited: make(chan struct{}), dead: make(chan struct{})}
	go func() { // decodes frames until the worker exits
		defer close(w.exited)
		defer close(w.frames)
		in := bufio.NewReaderSize(stdout, 64<<10)
		for {
			typ, payload, err := readFrame(in, nil)
			if err != nil {
				return
			}
			select {
			case w.frames <- frame{typ, payload}:
			case <-w.dead:
				return
			}
		}
	}()
	p.mu.Lock()
	p.all[w] = true
	p.mu.Unlock()
	select {
	case f, ok := <-w.frames:
		if ok && f.typ == frameReady && len(f.payload) == 4 {
			return w, int(binary.LittleEndian.Uint32(f.payload)), nil
		}
	case <-time.After(workerStart):
	}
	p.kill(w)
	return nil, 0, errors.New("tts: a synthesis worker did not start")
}

// kill ends a worker for good.
func (p *Pool) kill(w *worker) {
	p.mu.Lock()
	delete(p.all, w)
	p.mu.Unlock()
	w.killed.Do(func() { p.stop(w) })
}

// stop ends a worker's process (once, from kill).
func (p *Pool) stop(w *worker) {
	select {
	case <-w.dead:
		return // a placeholder for a worker that could not start
	default:
		close(w.dead)
	}
	_ = w.stdin.Close()
	_ = w.cmd.Process.Kill()
	go func() {
		_ = w.cmd.Wait()
		if st := w.cmd.ProcessState; st != nil {
			p.mu.Lock()
			p.exitedCPU += st.UserTime() + st.SystemTime()
			p.mu.Unlock()
		}
	}()
}

// CPUSeconds is the CPU time the pool's workers have used, those running
// (read from /proc, on Linux) and those gone.
func (p *Pool) CPUSeconds() float64 {
	p.mu.Lock()
	total := p.exitedCPU
	pids := make([]int, 0, len(p.all))
	for w := range p.all {
		pids = append(pids, w.cmd.Process.Pid)
	}
	p.mu.Unlock()
	for _, pid := range pids {
		total += processCPU(pid)
	}
	return total.Seconds()
}

// processCPU is a live process's user and system time from /proc (0 where
// there is none).
func processCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces): state is the 3rd
	// field, utime and stime the 14th and 15th, in clock ticks (100 a second).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100)
}

// SampleRate implements Synthesizer.
func (p *Pool) SampleRate() int { return p.rate }

// Size is how many workers the pool runs.
func (p *Pool) Size() int { return p.size }

// ErrPoolClosed: the pool was closed.
var ErrPoolClosed = errors.New("tts: the worker pool is closed")

// acquire takes an idle worker, replacing one that died while idle.
func (p *Pool) acquire(ctx context.Context) (*worker, error) {
	select {
	case w, ok := <-p.idle:
		if !ok {
			return nil, ErrPoolClosed
		}
		if !w.gone() {
			return w, nil
		}
		return p.replace(w)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// replace starts a worker in the place of a dead one (its slot is held by
// the caller).
func (p *Pool) replace(old *worker) (*worker, error) {
	p.kill(old)
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil, ErrPoolClosed
	}
	w, _, err := p.start()
	if err != nil {
		// The slot stays usable: the next caller tries to start it again.
		dead := &worker{dead: make(chan struct{}), exited: make(chan struct{}), stdin: nopCloser{}, cmd: old.cmd}
		close(dead.dead)
		p.release(dead)
		return nil, err
	}
	return w, nil
}

type nopCloser struct{}

func (nopCloser) Write(b []byte) (int, error) { return 0, io.ErrClosedPipe }
func (nopCloser) Close() error                { return nil }

// release returns a worker to the pool.
func (p *Pool) release(w *worker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.idle <- w
}

// Synthesize implements Synthesizer.
func (p *Pool) Synthesize(ctx context.Context, req Request, emit func([]int16) error) error {
	if req.Text == "" {
		return ErrEmptyText
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, synthesisTimeout)
		defer cancel()
	}
	w, err := p.acquire(ctx)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.nextID++
	id := p.nextID
	p.mu.Unlock()
	err, healthy := p.run(ctx, w, id, req, emit)
	if !healthy {
		p.kill(w) // replaced by the next acquire
	}
	p.release(w)
	return err
}

// run does one synthesis on w; healthy is false when w must be replaced.
func (p *Pool) run(ctx context.Context, w *worker, id uint32, req Request, emit func([]int16) error) (err error, healthy bool) {
	if werr := writeFrame(w.stdin, frameSynth, synthPayload(id, req)); werr != nil {
		return errors.New("tts: the synthesis worker is gone"), false
	}
	var stopped error // why the parent stopped the synthesis
	var waitDone <-chan time.Time
	done := ctx.Done()
	// stop asks the worker to stop for why; false when it cannot be told.
	stop := func(why error) bool {
		stopped, done, waitDone = why, nil, time.After(cancelWait)
		return writeFrame(w.stdin, frameCancel, idPayload(id)) == nil
	}
	for {
		select {
		case f, ok := <-w.frames:
			if !ok {
				return errors.New("tts: the synthesis worker exited"), false
			}
			switch f.typ {
			case frameAudio:
				if stopped == nil && ctx.Err() != nil && !stop(ctx.Err()) {
					return stopped, false
				}
				if stopped != nil {
					continue // what was in flight when the caller stopped
				}
				samples := make([]int16, len(f.payload)/2)
				for i := range samples {
					samples[i] = int16(binary.LittleEndian.Uint16(f.payload[2*i:]))
				}
				if eerr := emit(samples); eerr != nil && !stop(eerr) {
					return stopped, false
				}
			case frameDone:
				if stopped != nil {
					return stopped, true
				}
				if msg := string(f.payload); msg != "" {
					return errors.New(msg), true
				}
				return nil, true
			}
		case <-done:
			if !stop(ctx.Err()) {
				return stopped, false
			}
		case <-waitDone:
			return stopped, false // the worker does not answer: replace it
		}
	}
}

// Close stops every worker.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	workers := make([]*worker, 0, len(p.all))
	for w := range p.all {
		workers = append(workers, w)
	}
	p.mu.Unlock()
	for _, w := range workers {
		p.kill(w)
	}
}
