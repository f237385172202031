// Package voicecall runs a live call over VoiceService.Converse that
// outlives the instance holding it. When that instance drains (a
// session_moving event) or dies (the stream breaks without a reason from
// the server), the call reconnects (to the next endpoint, or the same one
// behind a load balancer) and rejoins its session by id: the conversation
// goes on with its history and metrics, and the caller loses at most the
// reply that was in flight.
//
//	call, err := voicecall.Dial(ctx, voicecall.Options{
//		Endpoints: []avbv1connect.VoiceServiceClient{client},
//		Start:     &avbv1.SessionStart{Config: cfg},
//	})
//	go func() { for frame := range mic { _ = call.SendAudio(frame) } }()
//	for { ev, err := call.Receive(); ... }
package voicecall

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/agentvoicebox/avb/apierror"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
)

// Options configure a call.
type Options struct {
	// Endpoints are tried in turn, on the first connection and on each
	// reconnect; one behind a load balancer is enough.
	Endpoints []avbv1connect.VoiceServiceClient
	// Start opens the call: a new session (its config) or one to join.
	Start *avbv1.SessionStart
	// ResumeWithin bounds how long the call tries to rejoin its session
	// after losing its instance (30 s when zero); past it Receive returns
	// the error that cut the call.
	ResumeWithin time.Duration
	// OpenTimeout bounds each connection's wait for its session to start
	// (10 s when zero): an instance that accepts and answers nothing is
	// given up on, and the next endpoint tried.
	OpenTimeout time.Duration
	// BufferFrames is how much caller audio sent while the call is between
	// instances is kept and sent on rejoining (100 frames, 2 s of 20 ms
	// frames, when zero); older audio is dropped.
	BufferFrames int
}

// Call is a live call that moves between instances.
type Call struct {
	opts   Options
	ctx    context.Context
	cancel context.CancelFunc
	events chan event

	// sendMu serializes sends (a stream takes one at a time) and the
	// switch to a new stream with the audio kept for it.
	sendMu sync.Mutex

	mu        sync.Mutex
	stream    *connect.BidiStreamForClient[avbv1.ConverseRequest, avbv1.ConverseResponse]
	sessionID string
	next      int // the endpoint to try next
	pending   [][]byte
	moving    bool // a move is under way
	closed    bool
	// done is closed when the current stream's reader stops.
	done chan struct{}
	// Resumes counts the rejoins; LastResume is how long the last took,
	// from the cut to the rejoined session's session_started.
	resumes    int
	lastResume time.Duration
}

type event struct {
	ev  *avbv1.VoiceEvent
	err error
}

// Dial opens the call and returns once the session is live (its
// session_started event is the first Receive).
func Dial(ctx context.Context, opts Options) (*Call, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("voicecall: no endpoints")
	}
	if opts.ResumeWithin <= 0 {
		opts.ResumeWithin = 30 * time.Second
	}
	if opts.OpenTimeout <= 0 {
		opts.OpenTimeout = 10 * time.Second
	}
	if opts.BufferFrames <= 0 {
		opts.BufferFrames = 100
	}
	cctx, cancel := context.WithCancel(ctx)
	c := &Call{opts: opts, ctx: cctx, cancel: cancel, events: make(chan event, 64)}
	stream, started, err := c.open(opts.Start)
	if err != nil {
		cancel()
		return nil, err
	}
	c.stream, c.sessionID = stream, started.GetSessionStarted().GetSession().GetId()
	c.events <- event{ev: started}
	c.done = make(chan struct{})
	go c.read(stream, c.done)
	return c, nil
}

// SessionID is the call's session.
func (c *Call) SessionID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sessionID
}

// Resumes is how many times the call rejoined its session, and how long
// the last rejoin took from the cut to the session being live again.
func (c *Call) Resumes() (int, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resumes, c.lastResume
}

// open connects to the next endpoint with start and waits for
// session_started.
func (c *Call) open(start *avbv1.SessionStart) (*connect.BidiStreamForClient[avbv1.ConverseRequest, avbv1.ConverseResponse], *avbv1.VoiceEvent, error) {
	c.mu.Lock()
	ep := c.opts.Endpoints[c.next%len(c.opts.Endpoints)]
	c.next++
	c.mu.Unlock()
	// The stream lives as long as the call, but must start within
	// OpenTimeout: past it, the stream is cancelled.
	ctx, cancel := context.WithCancel(c.ctx)
	deadline := time.AfterFunc(c.opts.OpenTimeout, cancel)
	stream := ep.Converse(ctx)
	if err := stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Start{Start: start}}); err != nil && !errors.Is(err, io.EOF) {
		cancel()
		return nil, nil, err
	}
	res, err := stream.Receive()
	if !deadline.Stop() {
		cancel()
		return nil, nil, connect.NewError(connect.CodeUnavailable, errors.New("voicecall: the session did not start in time"))
	}
	if err != nil {
		cancel()
		_ = stream.CloseRequest()
		return nil, nil, err
	}
	if res.GetEvent().GetSessionStarted() == nil {
		_ = stream.CloseRequest()
		cancel()
		return nil, nil, errors.New("voicecall: the server did not start the session")
	}
	return stream, res.GetEvent(), nil
}

// read delivers a stream's events until it ends, then moves the call
// when the end allows.
func (c *Call) read(stream *connect.BidiStreamForClient[avbv1.ConverseRequest, avbv1.ConverseResponse], done chan struct{}) {
	defer close(done)
	for {
		res, err := stream.Receive()
		if err != nil {
			c.ended(stream, err)
			return
		}
		ev := res.GetEvent()
		if ev.GetSessionMoving() != nil {
			// The instance drains: rejoin elsewhere now; this stream
			// still delivers what is in flight until it is closed.
			go c.move(stream, time.Now(), nil)
		}
		if !c.deliver(event{ev: ev}) {
			return
		}
	}
}

// ended handles the end of a stream: the current one's end either moves
// the call or ends it; an old one's end (a moved call) is quiet.
func (c *Call) ended(stream *connect.BidiStreamForClient[avbv1.ConverseRequest, avbv1.ConverseResponse], err error) {
	c.mu.Lock()
	current, moving, closed := c.stream == stream, c.moving, c.closed
	c.mu.Unlock()
	switch {
	case !current || closed:
		return
	case moving:
		return // the move in progress reports
	case errors.Is(err, io.EOF):
		c.deliver(event{err: io.EOF})
	case rejoinable(err) && c.ctx.Err() == nil:
		c.move(stream, time.Now(), err)
	default:
		c.deliver(event{err: err})
	}
}

// rejoinable: the call was cut by its instance going away (a transport
// error: a reset connection reads as canceled, unavailable or unknown), not
// ended by the server's decision, which carries a reason.
func rejoinable(err error) bool {
	switch apierror.Reason(err) {
	case "server_shutting_down":
		return true
	case "":
		switch connect.CodeOf(err) {
		case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeInternal, connect.CodeCanceled:
			return true
		}
		return errors.Is(err, io.ErrUnexpectedEOF)
	}
	return false
}

// move rejoins the session on another instance, retrying until
// ResumeWithin, then makes the new stream current and closes the old one.
func (c *Call) move(old *connect.BidiStreamForClient[avbv1.ConverseRequest, avbv1.ConverseResponse], cut time.Time, cause error) {
	c.mu.Lock()
	if c.moving || c.closed || c.stream != old {
		c.mu.Unlock()
		return
	}
	c.moving = true
	start := &avbv1.SessionStart{SessionId: c.sessionID}
	c.mu.Unlock()
	backoff := 50 * time.Millisecond
	for {
		stream, started, err := c.open(start)
		if err == nil {
			done := make(chan struct{})
			c.sendMu.Lock()
			c.mu.Lock()
			c.stream, c.moving, c.done = stream, false, done
			c.resumes++
			c.lastResume = time.Since(cut)
			pending := c.pending
			c.pending = nil
			c.mu.Unlock()
			for _, frame := range pending { // before anything sent from now on
				_ = stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Audio{Audio: &avbv1.AudioAppend{Audio: frame}}})
			}
			c.sendMu.Unlock()
			_ = old.CloseRequest()
			c.deliver(event{ev: started})
			go c.read(stream, done)
			return
		}
		if cause == nil {
			cause = err
		}
		if !rejoinable(err) || time.Since(cut)+backoff > c.opts.ResumeWithin || c.ctx.Err() != nil {
			c.mu.Lock()
			c.moving = false
			c.mu.Unlock()
			c.deliver(event{err: cause})
			return
		}
		select {
		case <-time.After(backoff):
		case <-c.ctx.Done():
		}
		backoff = min(2*backoff, time.Second)
	}
}

// deliver hands an event to Receive; false once the call is closed.
func (c *Call) deliver(e event) bool {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return true // hung up: what is left is not wanted
	}
	select {
	case c.events <- e:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// Receive returns the call's next event, across moves: a rejoin shows as
// a session_started with resumed set. io.EOF: the call ended normally.
func (c *Call) Receive() (*avbv1.VoiceEvent, error) {
	select {
	case e := <-c.events:
		return e.ev, e.err
	case <-c.ctx.Done():
		return nil, c.ctx.Err()
	}
}

// SendAudio sends caller audio. While the call is between instances the
// audio is kept (up to BufferFrames) and sent on rejoining.
func (c *Call) SendAudio(frame []byte) error {
	return c.send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Audio{Audio: &avbv1.AudioAppend{Audio: frame}}}, frame)
}

// SendControl sends a control message (not kept while between instances).
func (c *Call) SendControl(ctl *avbv1.ClientControl) error {
	return c.send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Control{Control: ctl}}, nil)
}

func (c *Call) send(req *avbv1.ConverseRequest, frame []byte) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return io.ErrClosedPipe
	}
	if c.moving {
		if frame != nil {
			if len(c.pending) == c.opts.BufferFrames {
				c.pending = c.pending[1:]
			}
			c.pending = append(c.pending, append([]byte(nil), frame...))
		}
		c.mu.Unlock()
		return nil
	}
	stream := c.stream
	c.mu.Unlock()
	err := stream.Send(req)
	if errors.Is(err, io.EOF) {
		return nil // the stream ended; Receive says how, or the call moves
	}
	return err
}

// closeWait bounds how long Close waits for the server to end the call.
const closeWait = 5 * time.Second

// Close hangs up: the session ends (completed) once the server has ended
// the call (bounded by 5 s).
func (c *Call) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	stream, done := c.stream, c.done
	c.mu.Unlock()
	defer c.cancel()
	c.sendMu.Lock()
	_ = stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Control{Control: &avbv1.ClientControl{Control: &avbv1.ClientControl_End{End: &avbv1.SessionEnd{}}}}})
	err := stream.CloseRequest()
	c.sendMu.Unlock()
	select {
	case <-done:
	case <-time.After(closeWait):
	}
	return err
}
