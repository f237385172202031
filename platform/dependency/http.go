package dependency

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// StatusError is an HTTP answer that means the dependency is failing (5xx,
// or 429 from an overloaded provider).
type StatusError struct{ Code int }

func (e *StatusError) Error() string { return fmt.Sprintf("answered HTTP %d", e.Code) }

// Transport returns a RoundTripper that sends through base (nil:
// http.DefaultTransport) under the guard. first bounds the time until the
// response headers arrive (for a stream, its first token); chunk bounds
// each wait for more of the body. A stream that stalls ends with *Error.
func (g *Guard) Transport(base http.RoundTripper, first, chunk time.Duration) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{g: g, base: base, headers: first, chunk: chunk}
}

type transport struct {
	g       *Guard
	base    http.RoundTripper
	headers time.Duration
	chunk   time.Duration
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	done, err := t.g.Begin()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	timer := time.AfterFunc(t.headers, func() {
		cancel(fmt.Errorf("no response headers within %s: %w", t.headers, context.DeadlineExceeded))
	})
	res, err := t.base.RoundTrip(req.WithContext(ctx))
	timedOut := !timer.Stop()
	if err != nil {
		if timedOut {
			err = context.Cause(ctx)
		}
		cancel(nil)
		return nil, done(req.Context(), err)
	}
	if res.StatusCode >= 500 || res.StatusCode == http.StatusTooManyRequests {
		_ = done(req.Context(), &StatusError{Code: res.StatusCode})
		// The caller reads the answer (its error body); the breaker has
		// counted the failure.
	} else {
		_ = done(req.Context(), nil)
	}
	b := &guardedBody{body: res.Body, g: t.g, chunk: t.chunk, cancel: func() { cancel(nil) }}
	b.timer = time.AfterFunc(t.chunk, func() {
		b.stalled.Store(true)
		cancel(context.DeadlineExceeded)
	})
	res.Body = b
	return res, nil
}

// guardedBody ends a body that stalls for longer than chunk, and releases
// the request's context when closed.
type guardedBody struct {
	body    io.ReadCloser
	g       *Guard
	chunk   time.Duration
	timer   *time.Timer
	stalled atomic.Bool
	cancel  func()
}

func (b *guardedBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if b.stalled.Load() {
		b.g.Down()
		return n, &Error{Dependency: b.g.name, Err: &cause{msg: fmt.Sprintf("stream stalled: nothing for %s", b.chunk)}}
	}
	if err == nil {
		b.timer.Reset(b.chunk)
	}
	return n, err
}

func (b *guardedBody) Close() error {
	b.timer.Stop()
	err := b.body.Close()
	b.cancel()
	return err
}
